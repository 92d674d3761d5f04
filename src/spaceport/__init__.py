"""spaceport: deploy a project folder from primary storage to a fast working copy, save it
back safely while an application works on it, and bring it home when the deployment ends."""

__version__ = "0.1.0"
