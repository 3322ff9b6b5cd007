"""The resolver service: how markets settled, the official climate reports, and how good the desk's predictions were."""
