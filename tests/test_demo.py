"""The demo's cloud as a person finds it: the card and PIN it prints sign in to the catalogue."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from cloud import store as cs
from kitap.demo import Demo


def test_the_printed_card_and_pin_sign_in_to_the_catalogue(tmp_path: Path) -> None:
    from cloud.app import create_app

    demo = Demo(tmp_path, seed=7)
    try:
        demo._seed()
        demo.cloud_url = "http://127.0.0.1:8100"
        line = next(x for x in demo.sign_ins() if "catalogue" in x)
        card, pin = re.search(r"card (\S+), PIN (\d{4})", line).groups()
        app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'cloud.db'}",
                          "START_CONSUMER": False, "TESTING": True})
        client = app.test_client()
        client.set_cookie("lang", "en")
        form = client.get("/catalogue/login").get_data(as_text=True)
        token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        r = client.post("/catalogue/login", data={"card": card, "pin": pin, "csrf": token})
        assert r.status_code == 302, r.get_data(as_text=True)
        account = client.get("/catalogue/account").get_data(as_text=True)
        assert demo.readers[card].name in account
        # Every reader of the sample fund has a PIN, not just the one printed.
        assert cs.Reader.select().where(cs.Reader.pin_hash == "").count() == 0
    finally:
        cs.db.close()
        shutil.rmtree(demo.sockdir, ignore_errors=True)
