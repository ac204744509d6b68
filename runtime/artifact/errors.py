"""The one error an unusable artifact raises, shared by the manifest and its typed entries."""


class ArtifactError(ValueError):
    """An artifact cannot be used as it is; the message says why and what to do."""


TAMPERED = "the file is damaged or tampered with, re-export the artifact"
