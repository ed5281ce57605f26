"""Apply RenderSettings to Blender's scene: engine, device, samples, denoiser, output format,
and every Cycles setting of `CyclesSettings` (none is left to BlenderProc's or Blender's
defaults). Called by data_pipeline.render.blender.render_object for each object, inside Blender.
"""

from __future__ import annotations

from data_pipeline.render.settings import BOUNCE_FIELDS, ENGINES, CyclesSettings, RenderSettings


def configure_scene(bproc, settings: RenderSettings) -> dict[str, str]:
    """Engine, device, samples, output format; returns the device actually used."""
    import bpy

    scene = bpy.context.scene
    scene.render.engine = ENGINES[settings.engine]
    if settings.device == "cpu":
        bproc.renderer.set_render_devices(use_only_cpu=True)
    else:
        bproc.renderer.set_render_devices()
    device = scene.cycles.device
    backend = bpy.context.preferences.addons["cycles"].preferences.compute_device_type
    if settings.device == "gpu" and device != "GPU":
        raise RuntimeError("device='gpu' but Cycles found no GPU (OPTIX, CUDA or HIP)")
    bproc.renderer.set_max_amount_of_samples(settings.samples)
    scene.eevee.taa_render_samples = settings.samples
    bproc.renderer.set_denoiser(None)  # BlenderProc's default runs OIDN in the compositor
    scene.use_nodes = False
    scene.cycles.use_denoising = settings.denoise
    scene.view_layers[0].cycles.use_denoising = settings.denoise
    if settings.denoise:
        scene.cycles.denoiser = "OPENIMAGEDENOISE"
    configure_cycles(scene, settings.cycles, on_gpu=device == "GPU")
    scene.render.threads_mode = "FIXED" if settings.threads else "AUTO"
    if settings.threads:
        scene.render.threads = settings.threads
    bproc.renderer.set_output_format(
        file_format="PNG", color_depth=8, enable_transparency=True,
        view_transform=settings.view_transform,
    )  # fmt: skip
    scene.view_settings.look = "None"
    scene.render.resolution_x = scene.render.resolution_y = settings.resolution
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    return {"device": device, "compute_backend": backend, "threads": scene.render.threads}


def configure_cycles(scene, cycles: CyclesSettings, on_gpu: bool) -> None:
    """Every Cycles setting the rings depend on, set for each object: nothing is left to
    BlenderProc's or Blender's defaults (which differ between versions)."""
    c = scene.cycles
    c.use_adaptive_sampling = cycles.adaptive_sampling
    c.adaptive_threshold = cycles.adaptive_threshold
    c.adaptive_min_samples = cycles.adaptive_min_samples
    c.denoising_prefilter = cycles.denoise_prefilter
    c.denoising_quality = cycles.denoise_quality
    c.denoising_input_passes = "RGB_ALBEDO_NORMAL"
    c.denoising_use_gpu = cycles.denoise_on_gpu and on_gpu
    for name in BOUNCE_FIELDS:
        setattr(c, name, getattr(cycles, name))
    c.use_light_tree = cycles.light_tree
    c.pixel_filter_type = "BLACKMAN_HARRIS"
    c.filter_width = cycles.pixel_filter_width
    c.debug_use_spatial_splits = cycles.spatial_splits
    scene.render.use_persistent_data = cycles.persistent_data
