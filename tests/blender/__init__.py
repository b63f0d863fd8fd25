"""Blender-side helpers and scenario scripts for the add-on tests (run under the bpy interpreter)."""
