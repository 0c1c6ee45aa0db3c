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
