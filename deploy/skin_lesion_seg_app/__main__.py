from app import SkinLesionSegApp

if __name__ == "__main__":
    SkinLesionSegApp().run()
