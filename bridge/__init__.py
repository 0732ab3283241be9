"""The bridge between the Krita plugin and the engine: framing, client, errors, shared geometry.

Standard library only and Python >= 3.8: Krita's plugin side imports it without numpy or torch.
"""

from bridge.protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
