"""A MONAI Deploy application that segments the skin lesion in every photo of a folder with the EGE-UNet bundle,
through the SDK's own MONAI Bundle inference operator.

    python deploy/skin_lesion_seg_app -i PHOTOS -o MASKS -m dist/egeunet_skin_lesion

``-m`` is the bundle folder, or a folder holding it (``python -m monai_egeunet.bundle_tools package`` builds it,
``monai.bundle.download`` fetches it); the operator runs the bundle's ``configs/inference.json`` (its
preprocessing, sliding-window inferer and postprocessing, on ``cuda`` when there is a GPU) with its
``models/model.pt``. ``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` may stand in for
the three options, as in a MONAI Application Package.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from photo_operators import MaskWriterOperator, PhotoLoaderOperator, list_photos

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application, Image, IOType
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
)

logger = logging.getLogger(__name__)


def bundle_folder(model_path: str | os.PathLike) -> Path:
    """The bundle folder that ``-m`` names: the folder itself, or the one bundle folder in it (a MONAI Application
    Package's models folder)."""
    path = Path(model_path)
    if (path / "configs" / "inference.json").is_file():
        return path
    found = sorted(p.parent.parent for p in path.glob("*/configs/inference.json"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"-m {path} is not a bundle folder (configs/inference.json, models/model.pt) nor a folder holding one "
            f"({len(found)} found)"
        )
    return found[0]


class SkinLesionSegApp(Application):
    """Photos in, one ``NAME_seg.png`` mask per photo out: loader -> bundle inference -> mask writer."""

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        photos = list_photos(app_context.input_path)
        bundle = bundle_folder(app_context.model_path)
        # The SDK's model factory wraps any folder in a model that cannot predict; with no model in the context,
        # the bundle operator loads the bundle folder itself (configs/inference.json and models/model.pt).
        app_context.models = None
        if not photos:
            logger.warning(f"no photos in {app_context.input_path}")
        loader = PhotoLoaderOperator(self, CountCondition(self, max(len(photos), 1)), photos=photos,
                                     name="photo_loader")
        # the labels are the bundle's: its metadata names the network's input "image" and output "pred"
        inference = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            bundle_path=bundle,
            name="bundle_inference",
        )
        writer = MaskWriterOperator(self, output_folder=app_context.output_path, name="mask_writer")
        self.add_flow(loader, inference, {("image", "image")})
        self.add_flow(inference, writer, {("pred", "seg_image")})


if __name__ == "__main__":
    SkinLesionSegApp().run()
