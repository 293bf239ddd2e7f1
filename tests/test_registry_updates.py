"""Two updates of one store at once both take effect (neither overwrites the other's change)."""

from __future__ import annotations

import threading
import time

from bridge.models import Language

BOTH_LAYOUTS = True


def test_concurrent_updates_of_one_store_both_take_effect(bridge, connect_store, monkeypatch):
    """A webhook keeping a rotated signing key set while the merchant saves settings and a new
    UPay key: before, each wrote back the whole record it had read, and one change was lost."""
    registry = bridge.runtime.registry
    record = connect_store(bridge, webhook=False)
    box = registry._box
    real_encrypt = box.encrypt

    def slow_encrypt(data):  # widen the window between reading the record and writing it
        time.sleep(0.4)
        return real_encrypt(data)

    monkeypatch.setattr(box, "encrypt", slow_encrypt)
    new_settings = record.settings.__class__(**{**record.settings.__dict__,
                                                "language": Language.AR})
    updates = [lambda: registry.update(record.id, secrets={"jwks": '{"keys": []}'}),
               lambda: registry.update(record.id, settings=new_settings,
                                       secrets={"upay_api_key": "new-upay-key-0123456789"})]
    threads = [threading.Thread(target=u) for u in updates]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    registry._forget(record.id)
    now = registry.get(record.id)
    assert now.secrets["jwks"] == '{"keys": []}'
    assert now.secrets["upay_api_key"] == "new-upay-key-0123456789"
    assert now.settings.language == Language.AR
    assert now.secrets["consumer_secret"] == record.secrets["consumer_secret"]
