"""Invoke namespaces. `inv` in a checkout and the `ollama-stack` script share them."""

from invoke import Collection

from . import dev, health, stack, update

ns = Collection(stack, health, update, dev)
