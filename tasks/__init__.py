"""Invoke namespaces. `inv` in a checkout and the `ollama-stack` script share them."""

from invoke import Collection

from . import backup, dev, ext, health, images, models, stack, update

ns = Collection(stack, health, backup, ext, models, images, update, dev)
