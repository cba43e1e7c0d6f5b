"""Artifact formats: every file that passes between attnforge's stages, in one folder.

``masks`` (``attnforge.masks/1``), ``head_tensors`` (``attnforge.vitcod_head/1``),
``linear_tensors`` (``attnforge.linear_tensors/1``), ``ticket_csr``
(``attnforge.tickets.csr/1``) and the CSR conventions they share (``csr``). All load
through the one protocol of ``npz`` and raise ``attnforge.errors.ArtifactError``;
every file attnforge writes goes through ``atomic`` (``atomic_write``, ``write_json_atomic``).
This is the ground layer: it imports numpy, ``attnforge.errors`` and ``attnforge.numfmt`` only.
"""
