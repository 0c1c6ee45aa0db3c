"""`ViT(...)`: the Vision Transformer as a Keras functional model (paper Sec. 3.1, Eq. 1-4).

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos        Eq. 1   PatchEncoder
    z'_l = MSA(LN(z_{l-1})) + z_{l-1},  l = 1..L          Eq. 2   TransformerBlock
    z_l = MLP(LN(z'_l)) + z'_l,         l = 1..L          Eq. 3   TransformerBlock
    y = LN(z_L^0)                                         Eq. 4   encoder_norm + TokenPooling

Since Eq. 4 reads only the class token's row, a classifier's last block computes only that row
(`last_block_class_token_only`; the other T - 1 rows would feed nothing).

The constructor follows `keras.applications` (`include_top`, `weights`, `input_tensor`,
`input_shape`, `pooling`, `classes`, `classifier_activation`, `include_preprocessing`).
"""

import inspect

import keras

from keras_vit import checkpoint, kernels
from keras_vit.layers.attention_pooling import MultiheadAttentionPooling
from keras_vit.layers.layer_norm import LayerNorm
from keras_vit.layers.patch_encoder import PatchEncoder, check_position_embedding
from keras_vit.layers.patches import Patches, grid_size
from keras_vit.layers.position_resample import any_size_grid
from keras_vit.layers.pooling import POOLINGS, TokenPooling
from keras_vit.layers.register_tokens import RegisterTokens
from keras_vit.layers.resnet import resnet_stem
from keras_vit.layers.transformer_block import LAYER_NORM_EPSILON, TransformerBlock
from keras_vit.layers.utils import scale_and_offset, to_pair

CLASSIFIERS = ("token", "gap", "map")


@keras.saving.register_keras_serializable(package="keras_vit")
class VisionTransformer(keras.Model):
    """The functional model that `ViT(...)` and the variants return.

    A plain Keras functional model (same config, same `.keras` files) with two differences.
    On PyTorch, `compile(jit_compile=True)` trains with a step that compiles the forward pass
    and the loss as one traced graph and runs the optimizer eagerly
    (`keras_vit/kernels/torch_step.py`; Keras' own step recompiles per layer class); the same
    updates as Keras' step. On TensorFlow, what `jit_compile="auto"` (Keras' default) picks,
    where Keras leaves XLA off on CPUs:

    - under a `tf.distribute` strategy, no step compiles with XLA, as in Keras (with several
      devices XLA's steps fail to run);
    - on accelerators, and for small models on CPUs, every step compiles with XLA, which fuses
      the layer norms, softmax and GELU into their neighbours (per-op overhead dominates small
      CPU steps);
    - from about 1 GFLOP per image up on CPUs, steps are bound by their matrix products, which
      TensorFlow's oneDNN kernels run faster than XLA's, so training and inference skip XLA.

    The figures behind these choices: benchmarks/RESULTS.md (sessions 16-18).
    `model.jit_compile` reads what "auto" resolved to; an explicit `jit_compile=True` or
    `False` (in `compile`, or set on `model.jit_compile`) applies as in Keras.
    """

    # Forward multiply-adds per image from which CPU steps skip XLA (see above).
    CPU_WITHOUT_XLA_MACS = 0.5e9

    def compile(self, *args, **kwargs):
        chosen = inspect.signature(keras.Model.compile).bind(self, *args, **kwargs).arguments
        super().compile(*args, **kwargs)
        if chosen.get("jit_compile", "auto") == "auto":
            # Saved as "auto", not as what it resolved to: the choice depends on the machine.
            self._compile_config.config["jit_compile"] = "auto"

    def compile_from_config(self, config):
        # What Keras' own does (it skips models that override `compile`): loading a compiled
        # model compiles it again, optimizer state included.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built and getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    def make_train_function(self, force=False):
        # PyTorch with jit_compile=True: the forward pass and loss compiled as one graph, the
        # optimizer eager (keras_vit/kernels/torch_step.py: Keras' own step recompiles per
        # layer class); Keras' step where that does not apply.
        if (keras.backend.backend() == "torch" and self.jit_compile
                and (force or self.train_function is None)):
            from keras_vit.kernels import torch_step  # noqa: PLC0415 (the torch backend only)

            step = torch_step.make_train_function(
                self, lambda: super(VisionTransformer, self).make_train_function(force=True)
                or self.train_function)
            if step is not None:
                self.train_function = step
                return step
        return super().make_train_function(force)

    def _resolve_auto_jit_compile(self):
        # What "auto" means, for `compile` and for a model that was never compiled.
        if keras.backend.backend() == "tensorflow":
            if getattr(self, "_distribute_strategy", None) is not None:
                # Keras' own rule: no XLA under tf.distribute (a model created in a
                # MirroredStrategy scope over several devices fails to compile with XLA:
                # "Trying to access resource ... located in device CPU:1 from device CPU:0").
                return False
            return not self._cpu_runs_faster_in_graph()  # every keras_vit layer compiles
        return super()._resolve_auto_jit_compile()

    def _cpu_runs_faster_in_graph(self):
        """TensorFlow: without a GPU, whether the encoder's forward multiply-adds per image
        (tokens x weights per block) reach `CPU_WITHOUT_XLA_MACS`."""
        if kernels.device() != "cpu":
            return False
        # A model of any image size counts the tokens of its stored grid.
        tokens = next((1 + grid[0] * grid[1] for grid in (getattr(layer, "grid_size", None)
                       for layer in self.layers if isinstance(layer, PatchEncoder)) if grid), None)
        try:
            macs = sum((block.input.shape[1] or tokens) * block.count_params()
                       for block in self.layers if isinstance(block, TransformerBlock))
        except (TypeError, ValueError):  # a block called more than once, or on unknown tokens
            return False
        return macs >= self.CPU_WITHOUT_XLA_MACS


def ViT(
    image_size=None,
    patch_size=16,
    hidden_size=768,
    num_layers=12,
    num_heads=12,
    mlp_dim=3072,
    classifier="token",
    position_embedding="learned_1d",
    representation_size=None,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    gelu_approximate=None,
    stochastic_depth_rate=0.0,
    resnet_num_layers=None,
    resnet_width_factor=1,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    head=None,
    pos_embed_resample=None,
    patch_embed_resample=None,
    last_block_class_token_only=True,
    remat=False,
    num_register_tokens=0,
    layer_scale_init_value=None,
    no_embed_class=False,
    class_token=None,
    fc_norm=False,
    input_normalization=None,
    name="vit",
):
    """Builds a Vision Transformer.

    Args:
        image_size: int or (height, width) of the input images. Ignored when `input_shape` is
            given with a fixed size; with `input_shape=(None, None, C)`, the size whose patch
            grid the position embedding is stored at (the trained grid). Default: 224, or the
            checkpoint's native resolution when `weights` are loaded (e.g. 384 for the 384 px
            ImageNet fine-tuned files).
        patch_size: int or (P_h, P_w). Must divide the image size (for hybrids: the ResNet's
            feature map, so R50+ViT-B/16 uses patch size 1 on a 1/16-resolution map).
        hidden_size: D, the token width.
        num_layers: L, the number of encoder blocks.
        num_heads: attention heads; must divide `hidden_size`.
        mlp_dim: hidden width of each block's MLP.
        classifier: `"token"` (prepend a class token and classify its final row), `"gap"`
            (no class token; mean of all tokens after the final LayerNorm) or `"map"` (not in
            the paper: multi-head attention pooling, a learned query attending over the tokens
            after the final LayerNorm, as SigLIP and big_vision's `pool_type="map"`; see
            `keras_vit.layers.MultiheadAttentionPooling`).
        position_embedding: `"learned_1d"` (paper default), `"learned_2d"`, `"relative"` or
            `"none"`; see `PatchEncoder`.
        representation_size: if set, a `pre_logits` Dense + tanh of this width before the head
            (as in the ImageNet-21k pre-training checkpoints).
        dropout_rate: dropout after the position embedding and after each dense layer but
            q/k/v (paper: 0.1 for pre-training, 0 for fine-tuning).
        attention_dropout_rate: dropout on attention probabilities (0 in the paper).
        gelu_approximate: tanh-approximate GELU as the official checkpoints were trained
            (`True`), or exact erf GELU as timm / HF transformers (`False`). Default (None):
            `True`, or the GELU the `weights` were trained with (`False` for HF and timm
            checkpoints); an explicit choice that differs from the weights' warns.
        stochastic_depth_rate: maximum drop-path rate, growing linearly over the blocks
            (0 = off, as in the paper).
        resnet_num_layers: units per stage of the hybrid's BiT ResNet stem, e.g. (3, 4, 9);
            None for a pure ViT.
        resnet_width_factor: width multiplier of that ResNet.
        include_top: include `pre_logits` (if any) and the classification `head`.
        weights: None (random init); a registry name for this architecture's variant
            (`"imagenet"`, `"imagenet21k"`, ... see `keras_vit.list_weights`), downloaded and
            verified (or its `keras_vit.weights.WeightsEntry`); or a path: official /
            big_vision `.npz`, HF transformers directory or `.safetensors` / `.bin`, timm
            `.safetensors`, Keras `.weights.h5`. The position
            embedding is resampled when the checkpoint's resolution differs. With
            `include_top=True` the checkpoint's head is loaded and `classes` must match it
            (see `head`). See `keras_vit.weights.loading` and docs/pretrained_weights.md.
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: optional (H, W, C); overrides `image_size`, and allows C != 3. H and W
            may be None (as `keras.applications` convnets accept (None, None, 3)): the model
            then takes images of any size whose sides the patch divides, one size per batch,
            and resamples its position embedding, stored at `image_size`'s grid, to each
            call's grid inside the graph, with `pos_embed_resample`'s algorithm (the identity
            at the stored grid); see docs/dynamic_resolution.md. The stored grid is kept apart
            from the input shape because a learned embedding has to be stored at one grid, the
            one it was trained (or loaded) at. Not with `position_embedding="relative"`.
        pooling: with `include_top=False`: None returns the normalised token sequence
            (B, T, D); `"token"`, `"avg"` or `"max"` return (B, D); `"map"` (with
            `classifier="map"`) the attention-pooled output, as HF `SiglipVisionModel`'s
            `pooler_output`. `"avg"`/`"max"` leave out register tokens, and the class token of
            a model whose classifier is not `"token"` (`class_token=True`); a
            `classifier="token"` model's class token is pooled with the patches, as always.
        classes: number of classes of the head.
        classifier_activation: activation of the head (`"softmax"`, None for logits, ...).
        include_preprocessing: the model takes RGB in [0, 255] and scales it to [-1, 1]
            itself (or as `input_normalization` says); with False the caller passes the
            scaled input (see `keras_vit.preprocess_input`).
        head: with `weights` and `include_top=True`: None (load the checkpoint's classifier;
            a `classes` mismatch raises, as in `keras.applications`) or `"new"` (a fresh
            zero-initialised head with `classes` outputs and no `pre_logits` unless
            `representation_size` is given: the paper's fine-tuning setup). The zeroed heads
            of the ImageNet-21k files are never used as classifiers.
        pos_embed_resample: how a checkpoint's position embedding is resampled to another
            resolution (when loading, and for a model of any image size at each call):
            `"official"` (scipy zoom, order 1, as vit_jax), `"bicubic"` (antialiased, as
            timm), `"bicubic_no_antialias"` (HF Dinov2, SigLIP, ViTMAE) or `"dinov2"` (the
            original DINOv2 code's). Default (None): the weights' own (`"bicubic"` for timm
            files, each HF family's, else `"official"`).
        patch_embed_resample: how a checkpoint of another patch size is loaded: None (refused),
            `"pi"` (FlexiViT's PI-resize of the patch embedding for bilinearly resized patches,
            as big_vision) or `"pi_bicubic"` (for antialiased bicubic resizing, as timm):
            a patch resized to `patch_size` then gives the checkpoint's token (exactly when
            the new patch is larger). Without `image_size` the model keeps the checkpoint's
            resolution, so a B/16 file at 224 px with `patch_size=8` gives 28x28 tokens.
        last_block_class_token_only: when the model reads only the class token's final row
            (`classifier="token"` with `include_top=True` or `pooling="token"`), the last block
            computes only that row (`TransformerBlock(num_queries=1)`): the same outputs and
            gradients, without the last block's work on the other T - 1 rows (about 1/L of the
            encoder). Set False to keep every block's full (B, T, D) output in the graph, e.g.
            to read the last block's tokens with `get_layer(...).output`.
        remat: rematerialise the encoder blocks (`keras_vit.remat.RematTransformerBlock`):
            training keeps only each block's input and recomputes the rest in the backward
            pass, for much less activation memory at about one more forward pass per step.
            Same weights, outputs and gradients; `.keras` files keep the choice.
        num_register_tokens: R > 0 adds R learned register tokens after the class token,
            without position embedding (Darcet et al. 2024, DINOv2 with registers;
            `keras_vit.layers.RegisterTokens`). HF's and KerasHub's name (timm:
            `reg_tokens`). Off (0) by default, as every option below: the paper's model.
        layer_scale_init_value: a float adds a per-channel `LayerScale` on both residual
            branches of every block, initialised to it (CaiT, DeiT-III: 1e-6, DINOv2: 1e-5);
            the name of `keras.applications.ConvNeXt` and KerasHub (timm: `init_values`).
        no_embed_class: the position embedding covers the patches only and the class token
            gets none (DeiT-III, big_vision); timm's name.
        class_token: whether to prepend a class token; None (default) means
            `classifier == "token"`. True with `classifier="gap"` or `"map"` keeps one that the
            pooling leaves out, as MAE's fine-tuning (its checkpoints have a class token).
        fc_norm: move the final LayerNorm after the pooling (MAE and BEiT fine-tuning,
            timm's `fc_norm`): the image representation is LN(pool(z_L)) instead of
            pool(LN(z_L)), the norm named `fc_norm`. With `pooling=None` the tokens are then
            the last block's, unnormalised.
        input_normalization: what `include_preprocessing` maps [0, 255] RGB to: `"imagenet"`,
            (x / 255 - mean) / std with ImageNet's statistics (DINOv2, MAE, DeiT-III), or a
            (mean, std) pair of per-channel sequences for pixels in [0, 1] (`((0.5,) * 3,
            (0.5,) * 3)` is [-1, 1]). Default (None): the paper's [-1, 1] (also SigLIP's), or
            what the `weights` expect where their source says (DINOv2, MAE and DeiT-III
            files: `"imagenet"`; a HF directory's `preprocessor_config.json`). See
            `keras_vit.preprocess_input`.
        name: the model's name.

    Returns:
        A `keras.Model`.

    Example:

    >>> model = ViT(image_size=32, patch_size=8, hidden_size=64, num_layers=2, num_heads=4,
    ...             mlp_dim=128, classes=10)
    >>> model.output_shape
    (None, 10)

    Any image size at run time, the position embedding stored at 32 px's 4x4 grid:

    >>> import numpy as np
    >>> model = ViT(image_size=32, input_shape=(None, None, 3), patch_size=8, hidden_size=64,
    ...             num_layers=2, num_heads=4, mlp_dim=128, classes=10)
    >>> [tuple(model(np.zeros((1, h, w, 3))).shape) for h, w in ((32, 32), (48, 24))]
    [(1, 10), (1, 10)]
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {classifier!r}; expected one of {', '.join(CLASSIFIERS)}.")
    check_position_embedding(position_embedding)
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}.")
    if pooling is not None and pooling not in POOLINGS + ("map",):
        raise ValueError(
            f"Unknown pooling {pooling!r}; expected None or one of {', '.join(POOLINGS)}, map."
        )
    class_token = classifier == "token" if class_token is None else bool(class_token)
    if classifier == "token" and not class_token:
        raise ValueError("classifier='token' reads the class token; class_token=False has none.")
    if pooling == "token" and not class_token:
        raise ValueError(f"pooling='token' needs a class token, but classifier={classifier!r} "
                         "has none (pass class_token=True to keep one).")
    if pooling == "map" and classifier != "map":
        raise ValueError("pooling='map' reads the attention-pooling head of a classifier='map' "
                         f"model (its weights belong to the backbone); got classifier={classifier!r}.")
    scale_and_offset(input_normalization)  # a clear error for a bad choice
    if isinstance(num_register_tokens, bool) or not isinstance(num_register_tokens, int) \
            or num_register_tokens < 0:
        raise ValueError(f"num_register_tokens must be an int >= 0, got {num_register_tokens!r}.")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"`classes` must be a positive int with include_top=True, got {classes!r}.")

    plan = None
    if weights is not None:
        from keras_vit.weights.loading import plan_weights  # noqa: PLC0415 (optional path)

        plan = plan_weights(
            weights,
            dict(patch_size=patch_size, hidden_size=hidden_size, num_layers=num_layers,
                 num_heads=num_heads, mlp_dim=mlp_dim, resnet_num_layers=resnet_num_layers,
                 resnet_width_factor=resnet_width_factor,
                 # the later ViTs' options, which name a family's weights
                 num_register_tokens=num_register_tokens, classifier=classifier,
                 layer_scale_init_value=layer_scale_init_value, no_embed_class=no_embed_class,
                 position_embedding=position_embedding),
            image_size=image_size, input_shape=input_shape, input_tensor=input_tensor,
            include_top=include_top, classes=classes, head=head,
            representation_size=representation_size, gelu_approximate=gelu_approximate,
            pos_embed_resample=pos_embed_resample, classifier=classifier,
            patch_embed_resample=patch_embed_resample,
        )
        image_size, representation_size = plan.image_size, plan.representation_size
        gelu_approximate = plan.gelu_approximate
        if input_normalization is None:
            input_normalization = plan.input_normalization
    elif head is not None:
        raise ValueError(f"head={head!r} only applies when loading `weights`.")
    elif patch_embed_resample is not None:
        raise ValueError(f"patch_embed_resample={patch_embed_resample!r} only applies when "
                         "loading `weights`.")
    image_size = 224 if image_size is None else image_size
    gelu_approximate = True if gelu_approximate is None else gelu_approximate
    if pos_embed_resample is None:
        pos_embed_resample = plan.pos_embed_resample if plan is not None else "official"
    inputs, x = _inputs(image_size, input_tensor, input_shape)
    if include_preprocessing:
        # In float32 under mixed precision too: pixels up to 255 in bfloat16 are whole numbers
        # (spacing 1 from 128 up), which would double the bf16 logit error of the whole model.
        if input_normalization is None:
            x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale", dtype="float32")(x)
        else:
            scale, offset = scale_and_offset(input_normalization)
            if len(scale) != x.shape[-1]:
                raise ValueError(f"input_normalization has {len(scale)} channels, the input "
                                 f"{x.shape[-1]}.")
            x = keras.layers.Rescaling(scale, offset=offset, name="rescale", dtype="float32")(x)
    if resnet_num_layers is not None:
        x = resnet_stem(x, tuple(resnet_num_layers), resnet_width_factor)
    any_size = None in tuple(x.shape[1:3])
    if any_size:  # the embedding stored at image_size's grid, resampled to each call's
        grid = any_size_grid(image_size, patch_size, position_embedding, resnet_num_layers)
    else:
        grid = grid_size(tuple(x.shape[1:3]), patch_size)

    x = Patches(patch_size, flatten=not any_size, name="patches")(x)
    x = PatchEncoder(
        hidden_size,
        patch_size,
        grid_size=grid,
        use_class_token=class_token,
        position_embedding=position_embedding,
        dropout_rate=dropout_rate,
        no_embed_class=no_embed_class,
        pos_embed_resample=pos_embed_resample,
        name="embedding",
    )(x)
    if num_register_tokens:
        x = RegisterTokens(num_register_tokens, num_leading_tokens=int(class_token),
                           name="registers")(x)
    # Eq. 4 reads z_L^0 only, so the last block need not compute the other rows.
    class_row_only = last_block_class_token_only and classifier == "token" and (
        include_top or pooling == "token")
    block_class = TransformerBlock
    if remat:
        from keras_vit.remat import RematTransformerBlock as block_class  # noqa: PLC0415, N813
    for i in range(num_layers):
        block = block_class(
            num_heads,
            mlp_dim,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            gelu_approximate=gelu_approximate,
            stochastic_depth_rate=stochastic_depth_rate * i / max(num_layers - 1, 1),
            relative_position=position_embedding == "relative",
            layer_scale_init_value=layer_scale_init_value,
            name=f"encoderblock_{i}",
        )
        x = block(x, num_queries=1 if class_row_only and i == num_layers - 1 else None)
    if not fc_norm:
        x = LayerNorm(epsilon=LAYER_NORM_EPSILON, name="encoder_norm")(x)

    # Tokens that average pooling and the MAP head leave out (see `pooling`).
    prefix = int(class_token) + num_register_tokens
    skipped = num_register_tokens if classifier == "token" else prefix

    def pool(method):
        if method == "map":
            y = MultiheadAttentionPooling(num_heads, mlp_dim, gelu_approximate=gelu_approximate,
                                          num_prefix_tokens=prefix, name="map_head")(x)
        else:
            y = TokenPooling(method, num_prefix_tokens=0 if method == "token" else skipped,
                             name="pool")(x)
        return LayerNorm(epsilon=LAYER_NORM_EPSILON, name="fc_norm")(y) if fc_norm else y

    if include_top:
        x = pool({"token": "token", "gap": "avg", "map": "map"}[classifier])
        if representation_size:
            x = keras.layers.Dense(representation_size, activation="tanh", name="pre_logits")(x)
        # Zero-initialised head (paper); float32 so logits stay exact under mixed precision.
        x = keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype="float32",
            name="head",
        )(x)
    elif pooling is not None:
        x = pool(pooling)

    model = VisionTransformer(inputs, x, name=name)
    if plan is not None:
        plan.load(model)
    return model


def _inputs(image_size, input_tensor, input_shape):
    """The model's input layer(s) and the tensor to build on, `keras.applications` style."""
    if input_shape is None:
        height, width = to_pair(image_size, "image_size")
        input_shape = (height, width, 3)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}.")
    if input_tensor is None:
        inputs = keras.Input(shape=tuple(input_shape), name="images")
        return inputs, inputs
    if not keras.backend.is_keras_tensor(input_tensor):
        input_tensor = keras.Input(tensor=input_tensor, shape=tuple(input_shape))
    return keras.utils.get_source_inputs(input_tensor), input_tensor
