"""The inventory: what the operator declares (hosts, gateways, apps, secrets by reference) and the
checks made before any host is touched."""

from .model import App, Gateway, Host, Inventory, SecretRef, load, warnings

__all__ = ["App", "Gateway", "Host", "Inventory", "SecretRef", "load", "warnings"]
