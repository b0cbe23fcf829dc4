from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "monai_egeunet" / "version.py").read_text(), version)

setup(
    name="monai-egeunet",
    version=version["__version__"],
    description="EGE-UNet (MICCAI 2023) as a MONAI network and MONAI Bundle for skin lesion segmentation",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["monai_egeunet", "monai_egeunet.*"]),
    python_requires=">=3.9",
    # torch is installed first (see README) so that pip keeps the CPU build it finds
    install_requires=[
        "torch>=2.1",
        "monai>=1.4",
        "numpy>=1.24",
        "nibabel>=5.0",
        "itk>=5.3",
        "pytorch-ignite>=0.4.11",
        "pillow>=9.0",
        "tensorboard>=2.12",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "fire>=0.5",
        "jsonschema>=4.0",
        "scipy>=1.10",
        "scikit-image>=0.20",
    ],
    extras_require={
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1"],
        # MLflow's client without its server and UI; MONAI's MLFlowHandler logs to a local SQLite store through
        # sqlalchemy and alembic (MLflow 3.13+ no longer takes the plain file store)
        "tracking": ["mlflow-skinny>=2.12", "sqlalchemy>=1.4", "alembic>=1.10"],
        "hub": ["huggingface_hub>=0.23"],
        # the SDK imports pydicom and highdicom for its DICOM operators without declaring them; its tritonclient
        # pins protobuf<7, and it brings holoscan and cupy builds for CUDA: not part of 'test'
        "deploy": ["monai-deploy-app-sdk>=3.0", "pydicom>=2.3", "highdicom>=0.22"],
        "test": [
            "pytest>=7.0", "parameterized>=0.9", "onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1",
            "mlflow-skinny>=2.12", "sqlalchemy>=1.4", "alembic>=1.10", "huggingface_hub>=0.23",
        ],
    },
)
