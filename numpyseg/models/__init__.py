"""SA-UNetv2 and SA-UNet built from the layer library."""

from numpyseg.models.unet import SAUNet, SAUNetV2, UNet3, build_model

__all__ = ["SAUNetV2", "SAUNet", "UNet3", "build_model"]
