"""OpenHands integration for sandport.

The OpenHands app server runs behind the sandport gateway. This package makes
the app take every user's identity from sandport only, keeps each user's
conversation metadata, settings and secrets apart, and labels every sandbox
container with its conversation and owner so that sandport can route and
authorise ``/runtime/{conversation_id}/...`` requests.

The package is installed next to the ``openhands`` package by the patch
manifest (``integrations/openhands/patches.toml``), which also wires it into
the upstream extension points. Importing this package has no side effects.
"""

__version__ = '0.1.0'
