"""The paper's model variants as data (Table 1, plus Ti/S from the AugReg follow-up and the
hybrid): `VARIANTS`, name -> the architecture arguments of `keras_vit.ViT`.

Plain data, imported by the model's constructors (`keras_vit.variants`) and by the weight
loaders below them, which match checkpoints to variants without importing the model.
"""

# name -> architecture (official configs; parameter counts at 224 px / 1000 classes in the tests)
VARIANTS = {
    "ViTTi16": dict(patch_size=16, hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
    "ViTS16": dict(patch_size=16, hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "ViTS32": dict(patch_size=32, hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "ViTB8": dict(patch_size=8, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "ViTB16": dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "ViTB32": dict(patch_size=32, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "ViTL16": dict(patch_size=16, hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "ViTL32": dict(patch_size=32, hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "ViTH14": dict(patch_size=14, hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
    # R50+ViT-B/16: a ResNet-50 stem (3, 4, 9) downsamples 16x; patches of 1 on its map.
    "ViTR50B16": dict(
        patch_size=1, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072,
        resnet_num_layers=(3, 4, 9), resnet_width_factor=1,
    ),
}

# The later plain ViTs whose checkpoints keras_vit loads by name: name -> `keras_vit.ViT`
# arguments (size and the family's options; keras_vit.families builds them). Sizes from each
# family's code (HF configs on the hub, timm's model definitions); parameter counts are
# checked against HF's models in the tests. DINOv2-g/14 (SwiGLU MLP) is not among them.
_DINOV2 = dict(patch_size=14, layer_scale_init_value=1e-5, gelu_approximate=False,
               input_normalization="imagenet")
_SIGLIP = dict(classifier="map", gelu_approximate=True)
_MAE = dict(position_embedding="sincos_2d", gelu_approximate=False,
            input_normalization="imagenet")
_DEIT3 = dict(patch_size=16, layer_scale_init_value=1e-6, no_embed_class=True,
              gelu_approximate=False, input_normalization="imagenet")
_S = dict(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536)
_B = dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072)
_L = dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)
_H = dict(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120)

FAMILY_VARIANTS = {
    "DINOv2S14": dict(_DINOV2, **_S),
    "DINOv2B14": dict(_DINOV2, **_B),
    "DINOv2L14": dict(_DINOV2, **_L),
    "DINOv2S14Reg4": dict(_DINOV2, **_S, num_register_tokens=4),
    "DINOv2B14Reg4": dict(_DINOV2, **_B, num_register_tokens=4),
    "DINOv2L14Reg4": dict(_DINOV2, **_L, num_register_tokens=4),
    "SigLIPB16": dict(_SIGLIP, patch_size=16, **_B),
    # So400m: the shape-optimised ViT of Alabdulmohsin et al. 2023, as SigLIP's release.
    "SigLIPSo400m14": dict(_SIGLIP, patch_size=14, hidden_size=1152, num_layers=27,
                           num_heads=16, mlp_dim=4304),
    "MAEB16": dict(_MAE, patch_size=16, **_B),
    "MAEL16": dict(_MAE, patch_size=16, **_L),
    "MAEH14": dict(_MAE, patch_size=14, **_H),
    "DeiT3S16": dict(_DEIT3, **_S),
    "DeiT3B16": dict(_DEIT3, **_B),
    "DeiT3L16": dict(_DEIT3, **_L),
}

# The size arguments of `VARIANTS` / `FAMILY_VARIANTS`; the rest are options.
SIZE_KEYS = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
             "resnet_num_layers", "resnet_width_factor")
