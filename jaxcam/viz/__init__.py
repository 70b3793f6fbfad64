"""Pictures of explanations: colour maps over images (`heatmaps`: `overlay`, `heatmap`), figures of
results (`figures`), a folder of overlays for many images (`render`, what ``jaxcam render`` runs)
plots of model kinds beyond images (`plots`: 1-D signals, 3-D volumes) and the static ``index.html``
pages of render, evaluate and training folders (`pages`)."""
from jaxcam.viz.heatmaps import heatmap, overlay  # noqa: F401
