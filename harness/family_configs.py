"""The table of tiny ComfyUI model families: one :class:`Recipe` per ``comfy.supported_models``
entry (config class, ``unet_config`` at toy size, text-encoder width, latent shape), and the
entries left out (``EXCLUDED``: not image or video models; ``BLOCKED``: no passing tiny
instance yet, and why). ``harness.family_recipes`` builds and conditions them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["BLOCKED", "EXCLUDED", "FLUX_DIT", "RECIPES", "TOKENS", "UNET", "VIDEO", "Recipe"]

TOKENS = 7  # text tokens per conditioning
MASK = torch.ones(1, TOKENS, dtype=torch.long)  # no padding


@dataclass(frozen=True)
class Recipe:
    config: str  # class in comfy.supported_models
    unet_config: dict
    context_dim: int  # width of the text encoder's output
    latent: tuple[int, ...]  # latent shape without the batch: (C, H, W) or (C, T, H, W)
    pooled_dim: int | None = None  # pooled text vector, where the family takes one
    extra: dict = field(default_factory=dict)  # more keys of the CONDITIONING dict
    weights: dict = field(default_factory=dict)  # state-dict shapes get_model reads
    # the prompt reaches the model as token ids (extra "text_input_ids", the context is a
    # placeholder), as HiDream-O1's pass-through text encoder gives them
    token_ids: bool = False
    # more latent streams beside ``latent`` (shapes without the batch): the latent is then
    # ComfyUI's NestedTensor of all of them, as MiniMax H3's (video, audio)
    streams: tuple[tuple[int, ...], ...] = ()
    # buffers a checkpoint carries and the build leaves empty (name -> value)
    buffers: dict = field(default_factory=dict)


FLUX_DIT = dict(image_model="flux", in_channels=16, out_channels=16, patch_size=2, hidden_size=64,
                num_heads=2, axes_dim=[8, 12, 12], depth=2, depth_single_blocks=2, mlp_ratio=2.0,
                theta=10000, qkv_bias=True, context_in_dim=48, vec_in_dim=32,
                guidance_embed=False, txt_ids_dims=[])

UNET = dict(  # a two-level UNet with one transformer level (SD1/SD2/SDXL layout)
    image_size=32, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1],
    channel_mult=[1, 2], transformer_depth=[0, 1], transformer_depth_output=[0, 0, 1, 1],
    transformer_depth_middle=1, context_dim=48, use_linear_in_transformer=True,
    use_spatial_transformer=True, legacy=False,
    use_temporal_resblock=False, use_temporal_attention=False)

RECIPES: dict[str, Recipe] = {
    "SD15": Recipe("SD15", dict(UNET, use_linear_in_transformer=False, adm_in_channels=None),
                   48, (4, 8, 8)),
    "SDXL": Recipe("SDXL", dict(UNET, num_classes="sequential", adm_in_channels=2816),
                   48, (4, 8, 8), 1280),
    "SD3": Recipe("SD3", dict(
        in_channels=16, out_channels=16, patch_size=2, depth=2, input_size=None,
        adm_in_channels=32, num_patches=64, pos_embed_max_size=8,
        context_embedder_config={"target": "torch.nn.Linear",
                                 "params": {"in_features": 48, "out_features": 128}},
        pos_embed_scaling_factor=None, x_block_self_attn_layers=[]), 48, (16, 8, 8), 32),
    "WAN21_T2V": Recipe("WAN21_T2V", dict(
        image_model="wan2.1", model_type="t2v", dim=64, out_dim=16, num_heads=2, ffn_dim=128,
        num_layers=2, patch_size=(1, 2, 2), freq_dim=32, window_size=(-1, -1), qk_norm=True,
        cross_attn_norm=True, eps=1e-6, in_dim=16, text_dim=48), 48, (16, 2, 8, 8)),
    "FluxSchnell": Recipe("FluxSchnell", FLUX_DIT, 48, (16, 8, 8), 32),
    "Flux2": Recipe("Flux2", dict(
        FLUX_DIT, image_model="flux2", in_channels=128, out_channels=128, patch_size=1,
        axes_dim=[8, 8, 8, 8], num_heads=2, mlp_ratio=3.0, theta=2000, global_modulation=True,
        mlp_silu_act=True, qkv_bias=False, ops_bias=False, default_ref_method="index",
        ref_index_scale=10.0, txt_ids_dims=[3], vec_in_dim=None, guidance_embed=True),
        48, (128, 4, 4), extra={"guidance": 3.5}),
    "Chroma": Recipe("Chroma", dict(
        {k: v for k, v in FLUX_DIT.items() if k != "guidance_embed"}, image_model="chroma",
        in_channels=64, out_channels=64, in_dim=64, out_dim=64,
        hidden_dim=64, n_layers=2, vec_in_dim=None, txt_ids_dims=[]), 48, (16, 8, 8)),
    "HunyuanVideo": Recipe("HunyuanVideo", dict(
        image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=32,
        context_in_dim=48, hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=2,
        depth_single_blocks=2, axes_dim=[8, 12, 12], theta=256, patch_size=[1, 2, 2],
        qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
        use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False),
        48, (16, 2, 8, 8), 32, extra={"guidance": 6.0}),
    "QwenImage": Recipe("QwenImage", dict(
        image_model="qwen_image", in_channels=64, out_channels=16, num_layers=2,
        attention_head_dim=32, num_attention_heads=2, joint_attention_dim=48,
        axes_dims_rope=(8, 12, 12)), 48, (16, 1, 8, 8)),
    "Lumina2": Recipe("Lumina2", dict(
        image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=48,
        n_layers=2, n_refiner_layers=1, qk_norm=True, n_heads=2, n_kv_heads=2,
        axes_dims=[8, 12, 12], axes_lens=[300, 512, 512], rope_theta=10000.0,
        multiple_of=16, ffn_dim_multiplier=2.0, norm_eps=1e-5), 48, (16, 8, 8)),
    "ZImage": Recipe("ZImage", dict(
        image_model="lumina2", patch_size=2, in_channels=16, dim=256, cap_feat_dim=48,
        n_layers=2, n_refiner_layers=1, qk_norm=True, n_heads=2, n_kv_heads=2,
        axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512], rope_theta=256.0,
        multiple_of=16, ffn_dim_multiplier=2.0, norm_eps=1e-5, z_image_modulation=True,
        time_scale=1000.0, pad_tokens_multiple=32), 48, (16, 8, 8)),
    "HiDream": Recipe("HiDream", dict(
        image_model="hidream", attention_head_dim=32, axes_dims_rope=[16, 8, 8],
        caption_channels=[48, 48], max_resolution=[32, 32], in_channels=16,
        llama_layers=[0, 1, 1, 1, 1], num_attention_heads=2, num_routed_experts=2,
        num_activated_experts=1, num_layers=2, num_single_layers=2, out_channels=16,
        patch_size=2, text_emb_dim=32), 48, (16, 8, 8), 32,
        extra={"conditioning_llama3": torch.ones(1, 2, TOKENS, 48) * 0.1}),
    "AuraFlow": Recipe("AuraFlow", dict(
        in_channels=4, out_channels=4, patch_size=2, dim=64, n_layers=4, n_double_layers=2,
        n_heads=2, global_conddim=64, cond_seq_dim=48, max_seq=64), 48, (4, 8, 8)),
    "PixArtSigma": Recipe("PixArtSigma", dict(
        image_model="pixart_sigma", patch_size=2, hidden_size=64, num_heads=2, in_channels=4,
        depth=2, caption_channels=48, model_max_length=TOKENS, input_size=64,
        pe_interpolation=1.0, micro_condition=False), 48, (4, 48, 48)),
    "HunyuanDiT": Recipe("HunyuanDiT", dict(
        image_model="hydit", input_size=16, patch_size=2, in_channels=4, hidden_size=64,
        depth=4, num_heads=2, mlp_ratio=2.0, text_states_dim=48, text_states_dim_t5=32,
        text_len=TOKENS, text_len_t5=5), 48, (4, 8, 8), extra={
            "attention_mask": torch.ones(1, TOKENS), "attention_mask_mt5xl": torch.ones(1, 5),
            "conditioning_mt5xl": torch.ones(1, 5, 32) * 0.1}),
    "CosmosT2IPredict2": Recipe("CosmosT2IPredict2", dict(
        image_model="cosmos_predict2", max_img_h=64, max_img_w=64, max_frames=8,
        in_channels=16, out_channels=16, patch_spatial=2, patch_temporal=1,
        model_channels=64, num_blocks=2, num_heads=2, crossattn_emb_channels=48,
        pos_emb_cls="rope3d", use_adaln_lora=True, adaln_lora_dim=16), 48, (16, 1, 8, 8)),
    "Kandinsky5": Recipe("Kandinsky5", dict(
        image_model="kandinsky5", in_visual_dim=16, out_visual_dim=16, in_text_dim=48,
        in_text_dim2=32, time_dim=32, model_dim=64, ff_dim=128, visual_embed_dim=132,
        patch_size=(1, 2, 2), num_text_blocks=1, num_visual_blocks=2, axes_dims=(8, 12, 12)),
        48, (16, 2, 8, 8), 32),
    "GenmoMochi": Recipe("GenmoMochi", dict(
        # the block asserts an MLP width of 1536 x 8; a width 64 stream reaches it at ratio 192
        image_model="mochi_preview", use_t5=True, learn_sigma=False, posenc_preserve_area=True,
        attend_to_padding=False, depth=2, patch_size=2, num_heads=2, hidden_size_x=64,
        hidden_size_y=32, mlp_ratio_x=192.0, mlp_ratio_y=2.0, in_channels=12, qk_norm=True,
        qkv_bias=False, out_bias=True, patch_embed_bias=True, timestep_mlp_bias=True,
        timestep_scale=1000.0, t5_feat_dim=48, t5_token_length=TOKENS, rope_theta=10000.0,
        attn_drop=0.0), 48, (12, 2, 8, 8), extra={"attention_mask": MASK}),
    "LTXV": Recipe("LTXV", dict(
        image_model="ltxv", in_channels=128, cross_attention_dim=64, attention_head_dim=32,
        num_attention_heads=2, caption_channels=48, num_layers=2), 48, (128, 2, 2, 2),
        extra={"attention_mask": MASK}),
    "CogVideoX_T2V": Recipe("CogVideoX_T2V", dict(
        image_model="cogvideox", num_attention_heads=2, attention_head_dim=32, in_channels=16,
        out_channels=16, time_embed_dim=32, text_embed_dim=48, num_layers=2, sample_width=16,
        sample_height=16, sample_frames=5, patch_size=2, max_text_seq_length=TOKENS,
        use_rotary_positional_embeddings=True), 48, (16, 2, 8, 8)),
}



def _variant(base: str, config: str, **changes) -> Recipe:
    """Another supported_models entry built like ``base`` with some fields changed."""
    recipe = RECIPES[base]
    fields = {k: changes.pop(k) for k in ("context_dim", "latent", "pooled_dim", "extra")
              if k in changes}
    return Recipe(config, {**recipe.unet_config, **changes},
                  fields.get("context_dim", recipe.context_dim),
                  fields.get("latent", recipe.latent),
                  fields.get("pooled_dim", recipe.pooled_dim),
                  fields.get("extra", recipe.extra))


WAN = RECIPES["WAN21_T2V"].unet_config
RECIPES.update({
    "SD20": _variant("SD15", "SD20", use_linear_in_transformer=True),
    "SSD1B": _variant("SDXL", "SSD1B"),
    "Segmind_Vega": _variant("SDXL", "Segmind_Vega"),
    "KOALA_700M": _variant("SDXL", "KOALA_700M"),
    "KOALA_1B": _variant("SDXL", "KOALA_1B"),
    "SDXLRefiner": _variant("SDXL", "SDXLRefiner", adm_in_channels=2560),
    "SD15_instructpix2pix": _variant("SD15", "SD15_instructpix2pix", in_channels=8),
    "SDXL_instructpix2pix": _variant("SDXL", "SDXL_instructpix2pix", in_channels=8),
    "Flux": _variant("FluxSchnell", "Flux", guidance_embed=True, extra={"guidance": 3.5}),
    "FluxInpaint": _variant("FluxSchnell", "FluxInpaint", guidance_embed=True, in_channels=96,
                            extra={"guidance": 3.5}),
    "LongCatImage": _variant("FluxSchnell", "LongCatImage", vec_in_dim=None,
                             txt_ids_dims=[1, 2], pooled_dim=None),
    "HunyuanVideoI2V": _variant("HunyuanVideo", "HunyuanVideoI2V", in_channels=33),
    "HunyuanVideoSkyreelsI2V": _variant("HunyuanVideo", "HunyuanVideoSkyreelsI2V",
                                        in_channels=32),
    "HunyuanImage21": _variant("HunyuanVideo", "HunyuanImage21", vec_in_dim=None,
                               patch_size=[1, 1], axes_dim=[16, 16], in_channels=64,
                               out_channels=64, latent=(64, 4, 4), pooled_dim=None),
    "PixArtAlpha": _variant("PixArtSigma", "PixArtAlpha", image_model="pixart_alpha",
                            micro_condition=True, hidden_size=96),  # size embeddings: 3 x 32
    "HunyuanDiT1": _variant("HunyuanDiT", "HunyuanDiT1", image_model="hydit1"),
    "WAN22_T2V": _variant("WAN21_T2V", "WAN22_T2V", in_dim=48, out_dim=48,
                          latent=(48, 2, 8, 8)),
    "WAN21_I2V": _variant("WAN21_T2V", "WAN21_I2V", model_type="i2v", in_dim=36),
    "WAN21_FunControl2V": _variant("WAN21_T2V", "WAN21_FunControl2V", model_type="i2v",
                                   in_dim=48),
    "WAN21_FlowRVS": _variant("WAN21_T2V", "WAN21_FlowRVS", model_type="flow_rvs"),
    "Kandinsky5Image": _variant("Kandinsky5", "Kandinsky5Image", visual_embed_dim=64,
                                latent=(16, 8, 8)),
    "CosmosI2VPredict2": _variant("CosmosT2IPredict2", "CosmosI2VPredict2", in_channels=17),
    "Omnigen2": Recipe("Omnigen2", dict(
        image_model="omnigen2", patch_size=2, in_channels=16, hidden_size=64, num_layers=2,
        num_refiner_layers=1, num_attention_heads=2, num_kv_heads=2, multiple_of=16,
        axes_dim_rope=(8, 12, 12), text_feat_dim=48), 48, (16, 8, 8),
        extra={"attention_mask": MASK}),
    "Boogu": Recipe("Boogu", dict(
        image_model="boogu", patch_size=2, in_channels=16, hidden_size=64, num_layers=3,
        num_double_stream_layers=2, num_refiner_layers=1, num_attention_heads=2,
        num_kv_heads=2, multiple_of=16, axes_dim_rope=(8, 12, 12), instruction_feat_dim=48),
        48, (16, 8, 8), extra={"attention_mask": MASK}),
    "MageFlow": Recipe("MageFlow", dict(
        image_model="mage_flow", in_channels=128, out_channels=128, num_layers=2,
        attention_head_dim=32, num_attention_heads=2, joint_attention_dim=48,
        axes_dims_rope=(8, 12, 12)), 48, (128, 4, 4)),
    "JoyImage": Recipe("JoyImage", dict(
        image_model="joyimage", patch_size=[1, 2, 2], in_channels=16, hidden_size=64,
        num_attention_heads=2, text_dim=48, mlp_width_ratio=2.0, num_layers=2,
        rope_dim_list=[8, 12, 12]), 48, (16, 1, 8, 8)),
    "Ideogram4": Recipe("Ideogram4", dict(
        image_model="ideogram4", in_channels=128, num_layers=2, num_attention_heads=2,
        attention_head_dim=32, intermediate_size=128, adaln_dim=32, llm_features_dim=48,
        mrope_section=(6, 5, 5)), 48, (128, 4, 4)),
    "Krea2": Recipe("Krea2", dict(
        image_model="krea2", features=64, tdim=32, txtdim=48, heads=2, kvheads=2,
        multiplier=2, layers=2, patch=2, channels=16, txtlayers=2, txtheads=2, txtkvheads=2),
        96, (16, 1, 8, 8)),  # a 2-layer text feature stack: 2 x 48
    "Lens": Recipe("Lens", dict(
        image_model="lens", patch_size=2, in_channels=128, out_channels=32, num_layers=2,
        attention_head_dim=32, num_attention_heads=2, enc_hidden_dim=48,
        axes_dims_rope=(8, 12, 12), selected_layer_index=(0, 1)), 96, (128, 4, 4)),
    "ErnieImage": Recipe("ErnieImage", dict(
        image_model="ernie", hidden_size=64, num_attention_heads=2, num_layers=2,
        ffn_hidden_size=128, in_channels=128, out_channels=128, patch_size=1, text_in_dim=48,
        rope_axes_dim=(8, 12, 12)), 48, (128, 4, 4)),
})
RECIPES.update({
    "WAN21_CausalAR_T2V": _variant("WAN21_T2V", "WAN21_CausalAR_T2V", causal_ar=True),
    "WAN21_Vace": _variant("WAN21_T2V", "WAN21_Vace", model_type="vace", vace_in_dim=96,
                           vace_layers=1),
    "WAN21_Camera": _variant("WAN21_T2V", "WAN21_Camera", model_type="camera", in_dim=32),
    "WAN22_Camera": _variant("WAN21_T2V", "WAN22_Camera", model_type="camera_2.2", in_dim=36),
    "WAN22_S2V": _variant("WAN21_T2V", "WAN22_S2V", model_type="s2v"),
    "WAN21_HuMo": _variant("WAN21_T2V", "WAN21_HuMo", model_type="humo"),
    "WAN22_Animate": _variant("WAN21_T2V", "WAN22_Animate", model_type="animate"),
    "WAN21_SCAIL": _variant("WAN21_T2V", "WAN21_SCAIL", model_type="scail"),
    "WAN21_SCAIL2": _variant("WAN21_T2V", "WAN21_SCAIL2", model_type="scail2"),
    "WAN22_WanDancer": _variant("WAN21_T2V", "WAN22_WanDancer", model_type="wandancer",
                                in_dim=36),
    "HunyuanVideo15": _variant("HunyuanVideo", "HunyuanVideo15", vision_in_dim=32,
                               in_channels=65, out_channels=32, vec_in_dim=None,
                               guidance_embed=False, use_cond_type_embedding=True,
                               latent=(32, 2, 8, 8), pooled_dim=32, extra={}),
    "HunyuanImage21Refiner": _variant("HunyuanVideo", "HunyuanImage21Refiner",
                                      patch_size=[1, 1, 1], vec_in_dim=None, in_channels=128,
                                      out_channels=64, latent=(64, 2, 4, 4), pooled_dim=None),
    "Anima": _variant("CosmosT2IPredict2", "Anima", image_model="anima"),
    "ChromaRadiance": _variant("Chroma", "ChromaRadiance", image_model="chroma_radiance",
                               in_channels=3, out_channels=3, patch_size=4,
                               nerf_hidden_size=16, nerf_mlp_ratio=2, nerf_depth=2,
                               nerf_max_freqs=4, nerf_tile_size=64,
                               nerf_final_head_type="linear",
                               nerf_embedder_dtype=torch.float32, use_x0=False,
                               use_sequential_txt_ids=False, latent=(3, 16, 16)),
    "SVD_img2vid": _variant("SDXL", "SVD_img2vid", in_channels=8, adm_in_channels=768,
                            use_temporal_attention=True, use_temporal_resblock=True,
                            extra_ff_mix_layer=True, use_spatial_context=True,
                            merge_strategy="learned_with_images", merge_factor=0.0,
                            video_kernel_size=[3, 1, 1], disable_temporal_crossattention=False,
                            num_classes="sequential", pooled_dim=None, latent=(4, 8, 8)),
    # its cc_projection (clip-vision + camera -> context) is read from the checkpoint
    "Stable_Zero123": Recipe("Stable_Zero123", dict(RECIPES["SD15"].unet_config, in_channels=8),
                             52, (4, 8, 8), weights={"cc_projection.weight": (48, 52),
                                                     "cc_projection.bias": (48,)}),
    "SD21UnclipL": _variant("SD15", "SD21UnclipL", use_linear_in_transformer=True,
                            num_classes="sequential", adm_in_channels=1536),
    "SD21UnclipH": _variant("SD15", "SD21UnclipH", use_linear_in_transformer=True,
                            num_classes="sequential", adm_in_channels=2048),
})
RECIPES.update({
    "Stable_Cascade_C": Recipe("Stable_Cascade_C", dict(
        stable_cascade_stage="c", c_in=16, c_out=16, c_cond=64, c_hidden=[32, 64],
        nhead=[2, 2], blocks=[[1, 1], [1, 1]], block_repeat=[[1, 1], [1, 1]],
        c_clip_text=48, c_clip_text_pooled=32, c_clip_img=768), 48, (16, 8, 8), 32),
    "Stable_Cascade_B": Recipe("Stable_Cascade_B", dict(
        stable_cascade_stage="b", c_in=4, c_out=4, c_cond=64, c_hidden=[16, 32, 64, 64],
        nhead=[-1, -1, 2, 2], blocks=[[1, 1, 1, 1], [1, 1, 1, 1]],
        block_repeat=[[1, 1, 1, 1], [1, 1, 1, 1]], c_clip=32), 48, (4, 16, 16), 32),
})
RECIPES.update({
    "PixelDiTT2I": Recipe("PixelDiTT2I", dict(
        image_model="pixeldit_t2i", in_channels=3, num_groups=2, hidden_size=64,
        pixel_hidden_size=8, pixel_attn_hidden_size=32, pixel_num_groups=2, patch_depth=2,
        pixel_depth=2, patch_size=4, txt_embed_dim=48, txt_max_length=TOKENS),
        48, (3, 16, 16)),
    "ZImagePixelSpace": _variant("ZImage", "ZImagePixelSpace", image_model="zimage_pixel",
                                 in_channels=3, patch_size=2, decoder_hidden_size=32,
                                 decoder_num_res_blocks=2, decoder_max_freqs=4,
                                 decoder_in_channels=12, latent=(3, 16, 16)),
})
RECIPES.update({
    # Cosmos 1: its blocks run in (T, H, W, B, D) layout (batch in dim -2: 'seq_first' sites)
    "CosmosT2V": Recipe("CosmosT2V", dict(
        image_model="cosmos", max_img_h=64, max_img_w=64, max_frames=8, in_channels=16,
        out_channels=16, patch_spatial=2, patch_temporal=1, model_channels=64,
        block_config="FA-CA-MLP", concat_padding_mask=True, pos_emb_cls="rope3d",
        pos_emb_learnable=False, pos_emb_interpolation="crop", block_x_format="THWBD",
        affline_emb_norm=True, use_adaln_lora=True, adaln_lora_dim=16, num_blocks=2,
        num_heads=2, crossattn_emb_channels=48, extra_per_block_abs_pos_emb=True,
        extra_per_block_abs_pos_emb_type="learnable"), 48, (16, 2, 8, 8)),
})
RECIPES.update({
    # PixelDiT's pixel decoder fed a low-resolution latent (lq_latent, as PiDConditioning
    # attaches it) with its degradation level
    "PiD": _variant("PixelDiTT2I", "PiD", image_model="pid", lq_latent_channels=16,
                    lq_hidden_dim=16, lq_num_res_blocks=1, lq_interval=1, sr_scale=1,
                    latent_spatial_down_factor=8,
                    extra={"lq_latent": torch.ones(1, 16, 2, 2) * 0.1,
                           "degrade_sigma": torch.tensor([0.2])}),
})
RECIPES.update({
    # pixel-space Qwen3-VL language model that reads the prompt's token ids itself; made small
    # with the model's own text_config_overrides / vision_config_overrides
    "HiDreamO1": Recipe("HiDreamO1", dict(
        image_model="hidream_o1",
        text_config_overrides=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                   rope_dims=[6, 5, 5]),
        vision_config_overrides=dict(hidden_size=32, num_heads=2, intermediate_size=64, depth=1,
                                     num_position_embeddings=64, deepstack_visual_indexes=())),
        1, (3, 64, 64), token_ids=True),
})
RECIPES.update({
    # LTX-2's joint audio-video transformer, sampled on a video latent alone (no audio stream)
    "LTXAV": _variant("LTXV", "LTXAV", image_model="ltxav", audio_in_channels=128,
                      audio_cross_attention_dim=32, audio_attention_head_dim=16,
                      audio_num_attention_heads=2, connector_attention_head_dim=24,
                      connector_num_attention_heads=2, connector_num_layers=1, extra={}),
})
RECIPES.update({
    # joint audio-video DiT that takes batch 1 only and packs text, audio and video tokens into
    # one (S, D) sequence (no batch dim: 'unbatched' sites); latent = (video, audio) streams
    "MiniMaxH3": Recipe("MiniMaxH3", dict(
        image_model="minimax_h3", hidden_size=64, num_layers=2, token_refiner_num_layers=1,
        num_attention_heads=2, attention_head_dim=32, ffn_hidden_size=128, latents_dim=24,
        audio_latents_dim=32, text_dim=48, timestep_input_dim=32, time_embed_hidden_size=64,
        time_embed_dim=32, rope_inv_freq_len=4), 48, (24, 2, 4, 4), streams=((32, 2, 8),),
        buffers={"rope.inv_freq": 10000.0 ** (-torch.arange(4) / 4)}),
})
RECIPES.update({  # variants of the entries above
    "CogVideoX_I2V": _variant("CogVideoX_T2V", "CogVideoX_I2V", in_channels=32),
    "CogVideoX_Inpaint": _variant("CogVideoX_T2V", "CogVideoX_Inpaint", in_channels=48),
    "SV3D_u": _variant("SVD_img2vid", "SV3D_u", adm_in_channels=256),
    "SV3D_p": _variant("SVD_img2vid", "SV3D_p", adm_in_channels=1280),
    "CosmosI2V": _variant("CosmosT2V", "CosmosI2V", in_channels=17),
    "HunyuanVideo15_SR_Distilled": _variant("HunyuanVideo15", "HunyuanVideo15_SR_Distilled",
                                            in_channels=98),
})


#: supported_models entries that do not generate images or video (not AcT targets here)
EXCLUDED: dict[str, str] = {
    "LotusD": "dense prediction (depth / normals) from an image",
    "SD_X4Upscaler": "upscaler",
    "SeedVR2": "video restoration / upscaler",
    "StableAudio": "audio", "StableAudio3": "audio", "ACEStep": "audio (music)",
    "ACEStep15": "audio (music)",
    "Hunyuan3Dv2": "3D shapes", "Hunyuan3Dv2_1": "3D shapes", "Hunyuan3Dv2mini": "3D shapes",
    "TripoSplat": "3D (Gaussian splats)",
    "RT_DETR_v4": "object detection", "SAM3": "segmentation", "SAM31": "segmentation",
    "DepthAnything3": "depth estimation",
}

#: image/video entries without a passing tiny instance, and what blocks them
BLOCKED: dict[str, str] = {}

#: entries whose model generates video (the others generate images)
VIDEO: frozenset[str] = frozenset({
    "SVD_img2vid", "SV3D_u", "SV3D_p", "GenmoMochi", "LTXV", "HunyuanVideo",
    "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V", "HunyuanVideo15",
    "HunyuanVideo15_SR_Distilled", "CosmosT2V", "CosmosI2V", "CosmosI2VPredict2", "Kandinsky5",
    "LTXAV", "MiniMaxH3",
    "CogVideoX_T2V",
    "CogVideoX_I2V", "CogVideoX_Inpaint", *(name for name in RECIPES if name.startswith("WAN")),
})
