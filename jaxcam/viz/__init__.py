"""Pictures of explanations: colour maps over images (`heatmaps`: `overlay`, `heatmap`), figures of
results (`figures`), a folder of overlays for many images (`render`, what ``jaxcam render`` runs)
and plots of model kinds beyond images (`plots`: 1-D signals, 3-D volumes)."""
from jaxcam.viz.heatmaps import heatmap, overlay  # noqa: F401
