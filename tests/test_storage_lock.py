"""Local mode's storage folder held by another client: the connection stops with what to do."""

import pytest
from qdrant_client import QdrantClient

from imgsim.store import StorageHeld, connect


def test_a_storage_folder_held_by_another_client_is_named_with_what_to_do(tmp_path):
    storage = tmp_path / "qdrant"
    other_kernel = QdrantClient(path=str(storage))  # as a second notebook, or a run from the shell, holds it
    try:
        with pytest.raises(StorageHeld) as raised:
            connect(None, None, storage)
    finally:
        other_kernel.close()

    message = str(raised.value)
    assert message.startswith("IMGSIM_QDRANT_PATH") and str(storage) in message
    for advice in ("Shut down the other kernel", "point IMGSIM_QDRANT_PATH at another folder", "Qdrant server"):
        assert advice in message
    connect(None, None, storage).close()  # free again once the other client let go
