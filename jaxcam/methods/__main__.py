"""``python -m jaxcam.methods``: print the README's methods table, generated from the registry."""
import jaxcam


print(jaxcam.registry.markdown_table(), end="")
