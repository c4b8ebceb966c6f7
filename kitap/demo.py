"""``kitap demo``: a small live city network on this machine, driven by scripted readers.

Starts its own Mosquitto (never the one on 1883), the cloud, two vending
machines each wired to a firmware simulator over a pty, and one branch; loads
the sample fund into every database; then readers borrow and return books,
often at a different place than where they borrowed. Midway the broker is
killed for a while, as a metro station's link would drop: readers keep being
served and the outboxes fill, then drain when the link returns.
"""
from __future__ import annotations

import json
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kitap import sample_services
from kitap.procs import (
    Mosquitto,
    Process,
    free_port,
    http_json,
    kitap_command,
    port_open,
    start_firmware_sim,
    wait_for,
    wait_http,
)
from kitap.provision import provision
from kitap.sample_data import NodeSpec, SampleData, default_nodes, generate

# Ports a person can remember when they are free; any free port otherwise.
PREFERRED_PORTS = {"broker": 18830, "cloud": 8100}
# The link outage in a run that goes until Ctrl-C: every OUTAGE_EVERY seconds
# the broker dies for OUTAGE_LENGTH seconds.
OUTAGE_EVERY, OUTAGE_LENGTH = 90.0, 15.0
# Returns land at a different place than the checkout this often.
RETURN_ELSEWHERE = 0.6
# A card held to a machine's reader reaches the node over the serial line a
# moment after the simulator says it was presented.
CARD_WAIT = 3.0
# How long the summary waits for every outbox to drain after the readers stop.
CONVERGE_TIMEOUT = 30.0


def say(msg: str) -> None:
    """One line of the demo's narration."""
    print(f"{datetime.now():%H:%M:%S}  {msg}", flush=True)


def _port(name: str) -> int:
    pref = PREFERRED_PORTS.get(name)
    return pref if pref and not port_open(pref) else free_port()


@dataclass
class Site:
    """One edge node of the demo."""

    spec: NodeSpec
    url: str = ""
    control: str = ""            # the simulator's control socket (machines)
    available: list[str] = field(default_factory=list)  # copies a reader can take here


@dataclass
class OpenLoan:
    """A loan the scripted readers hold."""

    copy: str
    reader: str
    node: str


class Demo:
    """The running network and its scripted readers."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.data: SampleData = generate(default_nodes(), copies=3000, readers=300, seed=seed)
        self.titles = {t.id: t for t in self.data.titles}
        self.copy_title = {c.barcode: c.title_id for c in self.data.copies}
        self.readers = {r.card: r for r in self.data.readers}
        self.sites = {n.id: Site(n) for n in self.data.nodes}
        self.procs: list[Process] = []
        self.loans: list[OpenLoan] = []
        self.refused = 0
        # Every node logs in to the broker as itself; the access list lets it
        # publish only under its own topics (kitap/provision.py).
        self.auth = workdir / "auth"
        provision(self.auth, [n.id for n in self.data.nodes])
        self.broker = Mosquitto(workdir / "broker", port=_port("broker"), auth_dir=self.auth)
        self.cloud_url = ""
        self.token = secrets.token_urlsafe(16)
        self.blocked: str | None = None
        self.hold: tuple[str, str, str | None] | None = None
        self.desk_password = secrets.token_urlsafe(9)
        self.operator_password = secrets.token_urlsafe(12)
        # A reader for a person to sign in to the catalogue as; the scenes never block them.
        self.sample_reader = self.data.readers[0]
        # Unix socket paths are limited to ~100 bytes: keep them short.
        self.sockdir = Path(tempfile.mkdtemp(prefix="kitap-demo-"))

    # -- bring-up ----------------------------------------------------------------

    def start(self) -> None:
        """Seed every database and start every process."""
        say(f"sample fund: {len(self.data.titles)} titles, {len(self.data.copies)} copies, "
            f"{len(self.data.readers)} readers")
        self._seed()
        self.broker.start()
        say(f"broker: our own Mosquitto on 127.0.0.1:{self.broker.port}, one login per node, "
            "access list on")
        cport = _port("cloud")
        self._spawn("cloud", kitap_command(
            "cloud", "--db", f"sqlite:///{self.workdir / 'cloud.db'}",
            "--broker", f"127.0.0.1:{self.broker.port}", "--http", f"127.0.0.1:{cport}",
            "--credentials", str(self.auth / "cloud.env")), env={"KITAP_API_TOKEN": self.token})
        self.cloud_url = f"http://127.0.0.1:{cport}"
        for site in self.sites.values():
            self._start_site(site)
        wait_http(self.cloud_url + "/healthz")
        for site in self.sites.values():
            wait_http(site.url + "/healthz")
        for site in self.sites.values():
            status = wait_for(lambda s=site: self._bootstrapped(s), 60,
                              what=f"{site.spec.id} to bootstrap from the feed")
            say(f"{site.spec.id} bootstrapped from the cloud's feed: {status['readers']} readers, "
                f"{status['copies_here']} copies here (revision {status['feed_rev']})")
        say(f"cloud:  {self.cloud_url}/   (the readers' catalogue; staff: /console/)")
        for site in self.sites.values():
            say(f"{site.spec.kind:7s} {site.spec.id}: {site.url}/   ({site.spec.name})")
        for line in self.sign_ins():
            say(line)
        for site in self.sites.values():
            if site.control:
                say(f"be the reader or technician at {site.spec.id}: "
                    f"kitap firmware-sim-ctl --control {site.control} state")
        say(f"logs and databases: {self.workdir}/")

    def sign_ins(self) -> list[str]:
        """The logins a person can try the demo's pages with."""
        r = self.sample_reader
        return [f"desk login at b-central: user 'desk', password '{self.desk_password}'",
                f"ops console: {self.cloud_url}/console/   user 'operator', password "
                f"'{self.operator_password}'",
                f"readers' catalogue: {self.cloud_url}/catalogue/login   card {r.card}, "
                f"PIN {r.pin} ({r.name}; the same card and PIN work at the machines)"]

    def _bootstrapped(self, site: Site) -> dict[str, Any] | None:
        st = http_json("GET", site.url + "/api/status", timeout=2)[1]
        return st if st["feed_rev"] > 0 else None

    def _seed(self) -> None:
        from cloud import store as cs

        titles = [{"id": t.id, "title": t.title, "author": t.author, "isbn": t.isbn,
                   "language": t.language, "item_type": t.item_type} for t in self.data.titles]
        from cloud import accounts, marc

        # Every reader can sign in to the catalogue, and at a machine's PIN pad or
        # touch screen, with the PIN (hashed as the nodes check them).
        readers = [{"card": r.card, "name": r.name, "category": r.category,
                    "pin_hash": accounts.hash_pin(r.pin)} for r in self.data.readers]
        cs.connect(f"sqlite:///{self.workdir / 'cloud.db'}")
        cs.seed(
            nodes=[{"id": n.id, "kind": n.kind, "name": n.name} for n in self.data.nodes],
            titles=[],
            readers=readers,
            copies=[{"barcode": c.barcode, "title_id": c.title_id, "home_node": c.home_node,
                     "location_node": c.location_node, "slot": c.slot,
                     "status": "in_slot" if c.slot is not None else "on_shelf"}
                    for c in self.data.copies])
        # The catalogue goes in the way a library's own does: a MARC 21 file, imported.
        mrc = self.workdir / "catalogue.mrc"
        marc.write_file([{**t, "year": x.year} for t, x in
                         zip(titles, self.data.titles, strict=True)], mrc)
        result = marc.import_file(mrc)
        say(f"catalogue: {result.records} MARC 21 records imported from {mrc.name}")
        # Services: partners, a membership, counselling, workshops and their sessions.
        from cloud import settings

        sessions = sample_services.install(self.data.nodes, self.data.readers,
                                           datetime.now(settings.library_tz()))
        say(f"services: {len(sample_services.SERVICES)} services, "
            f"{len(sample_services.PARTNERS)} partner organisations, {sessions} sessions "
            "at the branches")
        # A console login for a person to try the ops console; printed, never stored.
        accounts.add_staff("operator", self.operator_password, "operator",
                           name="Demo operator")
        cs.db.close()
        # The edge nodes start empty and learn readers, titles and their own
        # copies from the cloud's change feed (a snapshot, then changes).
        for site in self.sites.values():
            mine = [c for c in self.data.copies if c.location_node == site.spec.id]
            site.available = [c.barcode for c in mine]
            if site.spec.kind == "machine":
                slots = {str(i): None for i in range(1, site.spec.slots + 1)}
                slots.update({str(c.slot): c.barcode for c in mine})
                # A big bin: nobody empties it during a demo.
                (self.workdir / f"{site.spec.id}-sim.json").write_text(
                    json.dumps({"slots": slots, "bin": [], "bin_capacity": 1000}))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        p = Process(name, argv, self.workdir / f"{name}.log", env=env).start()
        self.procs.append(p)
        return p

    def _start_site(self, site: Site) -> None:
        node = site.spec.id
        port = free_port()
        site.url = f"http://127.0.0.1:{port}"
        argv = ["edge", "--node", node, "--kind", site.spec.kind,
                "--db", str(self.workdir / f"{node}.db"),
                "--broker", f"127.0.0.1:{self.broker.port}", "--http", f"127.0.0.1:{port}",
                "--credentials", str(self.auth / f"{node}.env")]
        if site.spec.kind == "branch":
            self._desk_account(node)
        if site.spec.kind == "machine":
            site.control = str(self.sockdir / f"{node}.sock")
            sim, pty = start_firmware_sim(
                f"{node}-sim", self.workdir, state=self.workdir / f"{node}-sim.json",
                slots=site.spec.slots, control=site.control, auto_take=0.5)
            self.procs.append(sim)
            say(f"machine {node}: controller simulator on {pty}")
            argv += ["--serial", pty]
        p = Process(node, kitap_command(*argv), self.workdir / f"{node}.log",
                    env={"KITAP_API_TOKEN": self.token}).start()
        self.procs.append(p)

    def _desk_account(self, node: str) -> None:
        """A desk login for a person to try the branch's pages; printed, never stored."""
        from edge import auth
        from edge import store as es

        es.EdgeStore(node, str(self.workdir / f"{node}.db"))
        auth.add_staff("desk", self.desk_password)
        es.db.close()

    # -- the readers ------------------------------------------------------------

    def step(self) -> None:
        """One reader does one thing."""
        want_return = self.loans and (len(self.loans) > 40 or self.rng.random() < 0.45)
        if want_return:
            self._return()
        else:
            self._checkout()

    def _checkout(self) -> None:
        sites = [s for s in self.sites.values() if s.available]
        if not sites:
            return
        site = self.rng.choice(sites)
        copy = self.rng.choice(site.available)
        reader = self.rng.choice(self.data.readers)
        if site.spec.kind == "machine":
            from firmware_sim.control import ControlClient

            ControlClient(site.control).present_card(reader.card)
        code, body = self._checkout_call(site, reader.card, copy, self.token)
        title = self.titles[self.copy_title[copy]]
        if code == 201:
            site.available.remove(copy)
            self.loans.append(OpenLoan(copy, reader.card, site.spec.id))
            say(f"{reader.name} borrowed «{title.title}» ({title.author}) at {site.spec.id}, "
                f"due {body['due']}")
        else:
            self.refused += 1
            msg = body.get("message") if isinstance(body, dict) else body
            say(f"{reader.name} could not borrow «{title.title}» at {site.spec.id}: {msg}")

    @staticmethod
    def _checkout_call(site: Site, card: str, copy: str, token: str) -> tuple[int, Any]:
        """POST the checkout; at a machine, wait (briefly) for the card to reach the node."""
        deadline = time.monotonic() + CARD_WAIT
        while True:
            code, body = http_json("POST", site.url + "/api/checkout",
                                   {"reader": card, "copy": copy}, token=token)
            no_card = code == 409 and body.get("errors", {}).get("refusal") == "no_card"
            if not no_card or time.monotonic() > deadline:
                return code, body
            time.sleep(0.05)

    def _return(self) -> None:
        loan = self.loans.pop(self.rng.randrange(len(self.loans)))
        others = [s for s in self.sites.values() if s.spec.id != loan.node]
        if others and self.rng.random() < RETURN_ELSEWHERE:
            site = self.rng.choice(others)
        else:
            site = self.sites[loan.node]
        title = self.titles[self.copy_title[loan.copy]]
        name = self.readers[loan.reader].name
        if site.spec.kind == "machine":
            from firmware_sim.control import ControlClient

            reply = ControlClient(site.control).insert_return(loan.copy)
            ok = reply.get("outcome") == "accepted"
            where = "the return chute of " + site.spec.id
        else:
            code, reply = http_json("POST", site.url + "/api/return", {"copy": loan.copy},
                                    token=self.token)
            ok = code == 201
            where = site.spec.id
            if ok:
                site.available.append(loan.copy)
        moved = "" if site.spec.id == loan.node else f" (borrowed at {loan.node})"
        if ok:
            say(f"{name} returned «{title.title}» at {where}{moved}")
        else:
            self.loans.append(loan)
            say(f"{name} could not return «{title.title}» at {where}: {reply}")

    # -- scenes: the cloud decides, the nodes follow -------------------------------

    def scene_block(self) -> None:
        """The cloud blocks a debtor; at a machine a moment later, the card is refused."""
        from cloud import actions

        reader = self.rng.choice([r for r in self.data.readers if r != self.sample_reader])
        self._cloud_db()
        actions.block(reader.card, "3 books overdue")
        say(f"** the cloud blocks {reader.name} ({reader.card}): 3 books overdue")
        site = self.rng.choice([s for s in self.sites.values() if s.spec.kind == "machine"])
        copy = self.rng.choice(site.available)
        from firmware_sim.control import ControlClient

        def refused() -> Any:
            ControlClient(site.control).present_card(reader.card)
            code, body = self._checkout_call(site, reader.card, copy, self.token)
            if code == 201:   # the block had not arrived yet: undo, try again
                site.available.remove(copy)
                self.loans.append(OpenLoan(copy, reader.card, site.spec.id))
                return None
            return body if body.get("errors", {}).get("refusal") == "blocked" else None
        t0 = time.monotonic()
        body = wait_for(refused, 10, interval=0.2, what="the block to reach the machine")
        say(f"{reader.name} tries to borrow at {site.spec.id} "
            f"{time.monotonic() - t0:.1f}s later: refused: {body['message']}")
        self.blocked = reader.card

    def scene_unblock(self) -> None:
        """The debt is paid: the block is lifted everywhere."""
        from cloud import actions

        if self.blocked:
            self._cloud_db()
            actions.unblock(self.blocked)
            say(f"** the cloud lifts the block on {self.readers[self.blocked].name}")
            self.blocked = None

    def scene_hold(self) -> None:
        """A reader reserves a title for pickup at the branch."""
        from cloud import actions

        branch = next(s for s in self.sites.values() if s.spec.kind == "branch")
        copy = self.rng.choice(branch.available)
        reader = self.rng.choice(self.data.readers)
        self._cloud_db()
        hold = actions.place_hold(reader.card, self.copy_title[copy], branch.spec.id)
        if hold.copy in branch.available:
            branch.available.remove(hold.copy)
        self.hold = (hold.id, reader.card, hold.copy)
        say(f"** {reader.name} reserves «{self.titles[hold.title_id].title}» for pickup at "
            f"{branch.spec.id}: copy {hold.copy} is set aside")

    def scene_pickup(self) -> None:
        """The reader collects the reserved book at the desk."""
        if not self.hold:
            return
        hold_id, card, copy = self.hold
        branch = next(s for s in self.sites.values() if s.spec.kind == "branch")
        code, body = http_json("POST", f"{branch.url}/api/holds/{hold_id}/pickup",
                               token=self.token)
        name = self.readers[card].name
        if code == 201:
            self.loans.append(OpenLoan(copy, card, branch.spec.id))
            say(f"{name} collects the reserved book at the {branch.spec.id} desk, "
                f"due {body['due']}")
        else:
            say(f"{name} could not collect the reserved book: {body}")
        self.hold = None

    def scene_services(self) -> None:
        """Readers book a workshop at the branch desk: one with a partner's discount."""
        branch = next(s for s in self.sites.values() if s.spec.kind == "branch")
        code, sessions = http_json("GET", f"{branch.url}/api/sessions?branch={branch.spec.id}",
                                   token=self.token)
        workshop = next((x for x in sessions if x["service"] == "ws-business"), None) \
            if code == 200 else None
        if workshop is None:
            return
        staff = next(r for r in self.data.readers if r.category == "partner_staff")
        adult = next(r for r in self.data.readers if r.category == "adult")
        for reader in (staff, adult):
            code, body = http_json("POST", f"{branch.url}/api/bookings",
                                   {"reader": reader.card, "session": workshop["id"],
                                    "waitlist": True}, token=self.token)
            if code == 201:
                say(f"{reader.name} books «{workshop['names']['en']}» at the {branch.spec.id} "
                    f"desk ({body['seat']}): {sample_services.describe(body)}")
            else:
                say(f"{reader.name} could not book «{workshop['names']['en']}»: "
                    f"{body.get('message') if isinstance(body, dict) else body}")
        supported = next((r for r in self.data.readers if r.category == "supported"), None)
        if supported is not None:
            code, body = http_json("POST", f"{branch.url}/api/memberships",
                                   {"reader": supported.card, "service": "membership-year"},
                                   token=self.token)
            if code == 201:
                say(f"{supported.name} gets a yearly membership at the desk: "
                    f"{sample_services.describe(body)} (until {body['ends']})")

    def _cloud_db(self) -> None:
        from cloud import store as cs

        if cs.db.obj is None or cs.db.is_closed():
            cs.connect(f"sqlite:///{self.workdir / 'cloud.db'}")

    # -- the summary --------------------------------------------------------------

    def converge(self) -> bool:
        """Wait until every node's outbox is acknowledged; False on timeout."""
        def drained() -> bool:
            return all(http_json("GET", s.url + "/api/status", timeout=2)[1]["outbox_depth"] == 0
                       for s in self.sites.values())
        try:
            wait_for(drained, CONVERGE_TIMEOUT, interval=0.3, what="outboxes to drain")
            return True
        except TimeoutError:
            return False

    def summary(self, converged: bool) -> bool:
        """Print events published, acknowledged and applied, loans open, per location."""
        cloud = http_json("GET", self.cloud_url + "/api/summary", timeout=5, token=self.token)[1]
        by_node = {n["id"]: n for n in cloud["nodes"]}
        print()
        print("node         kind     published  acknowledged  applied  loans open  copies here")
        for site in self.sites.values():
            st = http_json("GET", site.url + "/api/status", timeout=5)[1]
            c = by_node.get(site.spec.id, {})
            print(f"{site.spec.id:12s} {site.spec.kind:8s} {st['last_seq']:9d}  "
                  f"{st['last_acked']:12d}  {c.get('applied_seq', 0):7d}  "
                  f"{c.get('loans_open', 0):10d}  {c.get('copies_here', 0):11d}")
        print(f"\ncloud: {cloud['events_applied']} events applied, {cloud['loans_open']} loans "
              f"open of {cloud['loans_total']}, {cloud['exceptions_open']} exceptions for staff, "
              f"{cloud['rejected_messages']} messages rejected")
        print(f"readers refused: {self.refused}; "
              + ("every outbox drained." if converged
                 else "NOT CONVERGED: some events are still waiting in an outbox."))
        # The readers' own record is the oracle: the cloud must agree with it.
        mine = {(ln.copy, ln.reader) for ln in self.loans}
        open_loans = http_json("GET", self.cloud_url + "/api/loans/open", timeout=5,
                               token=self.token)[1]
        theirs = {(ln["copy"], ln["reader"]) for ln in open_loans}
        if mine == theirs:
            print(f"the cloud agrees with the readers: the same {len(mine)} loans are open.")
        else:
            print(f"MISMATCH: readers hold {len(mine - theirs)} loans the cloud does not know; "
                  f"the cloud has {len(theirs - mine)} open that readers returned.")
        return converged and mine == theirs

    def stop(self) -> None:
        """Stop every process, edges first."""
        for p in reversed(self.procs):
            p.stop()
        self.broker.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)


def run_demo(*, duration: float | None, workdir: str, pace: float, seed: int) -> None:
    """Run the demo until Ctrl-C or ``duration`` seconds, then print the summary."""
    wd = Path(workdir).resolve()
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    demo = Demo(wd, seed)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if duration:
        # One outage in a timed run: from 35 % to 60 % of it.
        outages = [(duration * 0.35, duration * 0.60)]
    else:
        outages = [(t, t + OUTAGE_LENGTH) for t in range(30, 100_000, int(OUTAGE_EVERY))]
    code = 0
    try:
        demo.start()
        say("readers are on their way" + (f" for {duration:.0f}s" if duration else
                                          " (Ctrl-C to stop)"))
        t0 = time.monotonic()
        broker_down = False
        span = duration or 80.0
        scenes = [(span * 0.12, demo.scene_hold), (span * 0.20, demo.scene_block),
                  (span * 0.28, demo.scene_unblock), (span * 0.45, demo.scene_services),
                  (span * 0.75, demo.scene_pickup)]
        while not stop.is_set():
            elapsed = time.monotonic() - t0
            if duration and elapsed >= duration:
                break
            while scenes and elapsed >= scenes[0][0]:
                _, scene = scenes.pop(0)
                try:
                    scene()
                except Exception as exc:  # noqa: BLE001 - a scene must not end the demo
                    say(f"a scene failed: {exc}")
            in_outage = any(a <= elapsed < b for a, b in outages)
            if in_outage and not broker_down:
                demo.broker.kill()
                broker_down = True
                say("!! the broker is down (a link outage): nodes keep serving readers offline")
            elif not in_outage and broker_down:
                demo.broker.start()
                broker_down = False
                say("!! the broker is back: the outboxes drain to the cloud")
            try:
                demo.step()
            except Exception as exc:  # noqa: BLE001 - a demo step must not end the demo
                say(f"a reader's action failed: {exc}")
            stop.wait(1.0 / pace)
        if broker_down:
            demo.broker.start()
            say("!! the broker is back: the outboxes drain to the cloud")
        say("readers stopped; waiting for every outbox to drain")
        converged = demo.converge()
        code = 0 if demo.summary(converged) else 1
    except Exception as exc:
        say(f"the demo failed: {exc}; logs are in {wd}/")
        code = 2
    finally:
        demo.stop()
    sys.exit(code)
