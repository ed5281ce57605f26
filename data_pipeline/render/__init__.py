"""Rendering one object, inside the render process (process: the child that answers the
protocol): the typed settings and per-ring draws (settings), the parent <-> child protocol
(protocol), BlenderProc on bpy (blenderproc_env, blender_import, blender: `render_object`) and
the checks a rendered ring must pass (ring_checks; camera_agreement: do its stored cameras agree
with its images)."""
