"""A machine node (EdgeStore + MachineService) against the simulator: every fault, end to end.

Each test asserts what the reader would notice (the refusal, the display, the
book in their hand or not) and what the records say (loans, intents, the
events in the outbox, the node's copies, its faults and status).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from edge.machine_records import ReturnIntent
from edge.store import Copy, DispenseIntent, Loan, Reader, hash_pin
from tests.machine_bench import (
    FAST,
    Bench,
    bench_for,
    events_of,
    present,
    wait_until,
)

pytestmark = pytest.mark.integration

bench = pytest.fixture(bench_for, name="bench")

STOCK = {1: "C0000001", 2: "C0000002", 3: "C0000003"}


def refusal(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    return str(exc_info.value.refusal.code)  # type: ignore[attr-defined]


def loans() -> list[tuple[str, str]]:
    return [(ln.copy, ln.reader) for ln in Loan.select().where(Loan.returned_at.is_null())]


def test_card_dispense_taken_makes_exactly_one_loan(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2", loaded=STOCK)
    m = bench.node(STOCK)
    present(m, sim, "R0001")
    assert [o["copy"] for o in m.offer("R0001")] == ["C0000001", "C0000002", "C0000003"]
    result = m.checkout("R0001", "C0000002")
    assert (result.copy, result.reader, result.title) == ("C0000002", "R0001", "Абай жолы")
    assert loans() == [("C0000002", "R0001")]
    assert sim.state()["slots"]["2"] is None
    assert [t for t, _ in events_of()] == ["loan.checkout"]
    assert DispenseIntent.get_by_id(result.loan_id).state == "done"
    assert "Enjoy your book" in m.status()["message"]


def test_no_card_no_dispense_and_the_pin_pad(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2", loaded=STOCK)
    m = bench.node(STOCK)
    with pytest.raises(Exception) as exc:
        m.checkout("R0001", "C0000001")
    assert refusal(exc) == "no_card"
    assert sim.state()["slots"]["1"] == "C0000001"
    Reader.update(pin_hash=hash_pin("4821")).where(Reader.card == "R0002").execute()
    present(m, sim, "R0002")
    assert sim.ctl.state()["display"] == "Enter your PIN, then press OK."
    assert not m.pin_ok("R0002") and m.session_info()["offer"] == []
    sim.ctl.enter_pin("1111")
    wait_until(lambda: sim.ctl.state()["display"] == "Wrong PIN. Try again.", what="wrong PIN")
    assert not m.pin_ok("R0002")
    sim.ctl.enter_pin("4821")
    wait_until(lambda: m.pin_ok("R0002"), what="PIN accepted")
    assert len(m.session_info()["offer"]) == 3
    assert m.checkout("R0002", "C0000001").copy == "C0000001"
    assert sim.state()["slots"]["1"] is None and sim.state()["slots"]["3"] == "C0000003"


def test_three_wrong_pins_end_the_session(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK)
    Reader.update(pin_hash=hash_pin("4821")).where(Reader.card == "R0001").execute()
    present(m, sim, "R0001")
    for _ in range(3):
        sim.ctl.enter_pin("0000")
    wait_until(lambda: m.session is None, what="session ended")
    assert "locked" in sim.ctl.state()["display"]
    sim.ctl.present_card("R0001")
    sim.ctl.enter_pin("4821")  # even the right PIN now
    wait_until(lambda: "locked" in sim.ctl.state()["display"] and m.session is None,
               what="still locked")


def test_jam_no_loan_book_stays_slot_out_of_order_until_the_technician(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2", loaded=STOCK)
    m = bench.node(STOCK)
    present(m, sim, "R0001")
    sim.ctl.fault("jam")
    with pytest.raises(Exception) as exc:
        m.checkout("R0001", "C0000003")
    assert refusal(exc) == "jam"
    assert "jammed" in sim.ctl.state()["display"]
    assert loans() == [] and sim.state()["slots"]["3"] == "C0000003"
    assert events_of("loan.checkout") == []
    assert events_of("device.fault") == [("device.fault", {
        "kind": "jam", "state": "raised", "slot": 3, "detail": "slot 3 jammed during a dispense"})]
    assert m.status()["faults"][0]["kind"] == "jam" and m.fault_log[-1] == ["jam (slot 3)"]
    # The slot is out of order: not offered, not dispensed.
    assert "C0000003" not in [o["copy"] for o in m.offer("R0001")]
    with pytest.raises(Exception) as exc:
        m.checkout("R0001", "C0000003")
    assert refusal(exc) == "slot_out_of_order"
    # The technician's visit clears it.
    m.unlock_service_door()
    sim.ctl.open_door()
    sim.ctl.close_door()
    wait_until(lambda: not m.status()["faults"], what="jam cleared")
    assert events_of("device.fault")[-1][1]["state"] == "cleared"
    assert m.session is None  # the open door ended the reader's session
    present(m, sim, "R0001")
    assert m.checkout("R0001", "C0000003").copy == "C0000003"


def test_empty_slot_the_node_thought_full(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2", "--empty-slot", "2", loaded=STOCK)
    m = bench.node(STOCK)
    present(m, sim, "R0001")
    # The reconcile at the handshake already saw it: the node's copy moved out of slot 2.
    assert events_of("stock.audit")[0][1]["missing"] == [{"copy": "C0000002", "slot": 2}]
    with pytest.raises(Exception) as exc:
        m.checkout("R0001", "C0000002")
    assert refusal(exc) == "not_here"
    # A book that vanishes while the node runs: found at the dispense.
    sim.ctl.fault("vanish", slot=1)
    with pytest.raises(Exception) as exc:
        m.checkout("R0001", "C0000001")
    assert refusal(exc) == "empty_slot"
    assert loans() == []
    wait_until(lambda: len(events_of("stock.audit")) == 2, what="audit after the empty slot")
    audit = events_of("stock.audit")[1][1]
    assert audit["missing"] == [{"copy": "C0000001", "slot": 1}] and audit["reason"] == "dispense"
    assert Copy.get_by_id("C0000001").slot is None
    assert [o["copy"] for o in m.offer("R0001")] == ["C0000003"]


def test_book_not_taken_goes_back_no_loan(bench: Bench) -> None:
    sim = bench.sim("--take-timeout", "0.5", loaded=STOCK)
    m = bench.node(STOCK)
    present(m, sim, "R0001")
    with pytest.raises(Exception) as exc:
        m.checkout("R0001", "C0000001")
    assert refusal(exc) == "not_taken"
    assert sim.state()["slots"]["1"] == "C0000001" and loans() == []
    assert [i.state for i in DispenseIntent.select()] == ["failed"]
    assert events_of() == []


def test_return_of_any_copy_is_recorded_once_in_the_bin(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK)
    # A copy this node has never heard of, lent elsewhere in the network.
    reply = sim.ctl.insert_return("C0099999", timeout=5)
    assert reply["outcome"] == "accepted"
    assert sim.state()["bin"] == ["C0099999"]
    # The controller answers the reader when the book drops; the node records it right after.
    wait_until(lambda: events_of() == [("loan.return", {"copy": "C0099999", "loan_id": None,
                                                         "reader": None})], what="the return")
    assert [r.state for r in ReturnIntent.select()] == ["done"]
    wait_until(lambda: "returned" in sim.ctl.state()["display"], what="thanks on the display")
    wait_until(lambda: m.status()["returns_accepted"] == 1, what="one return counted")


def test_unknown_tag_in_the_chute_is_given_back_with_a_reason(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK)
    reply = sim.ctl.insert_return("SHOP-TAG-77", timeout=5)
    assert reply["outcome"] == "rejected"
    assert "not a book of the library network" in reply["reason"]
    assert "not a book of the library network" in sim.ctl.state()["display"]
    sim.ctl.fault("misread")
    reply = sim.ctl.insert_return("C0000777", timeout=5)
    assert reply["outcome"] == "rejected"
    assert sim.state()["bin"] == [] and events_of() == []
    wait_until(lambda: m.status()["returns_rejected"] == 2, what="two refusals counted")


def test_bin_full_closes_returns_until_the_technician_empties_it(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK, bin_capacity=2)
    m = bench.node(STOCK)
    for tag in ("C0000101", "C0000102"):
        assert sim.ctl.insert_return(tag, timeout=5)["outcome"] == "accepted"
    wait_until(lambda: not m.status()["returns_open"], what="returns closed")
    st = m.status()
    assert st["returns_closed_reason"] == "the return bin is full"
    assert st["bin"] == {"count": 2, "capacity": 2, "full": True}
    # The fault is recorded a moment after the controller state flips.
    wait_until(lambda: "bin_full" in m.fault_names(), what="the bin_full fault")
    assert "Returns are closed" in sim.ctl.state()["display"]
    reply = sim.ctl.insert_return("C0000103", timeout=5)
    assert (reply["outcome"], reply["reason"]) == ("refused", "the return bin is full")
    # The technician empties the bin: those copies are in transit; returns open again.
    m.unlock_service_door()
    sim.ctl.open_door()
    assert sorted(sim.ctl.empty_bin()) == ["C0000101", "C0000102"]
    sim.ctl.close_door()
    wait_until(lambda: m.status()["returns_open"], what="returns open again")
    removed = [b for t, b in events_of("stock.removed")]
    assert removed == [{"copy": "C0000101", "slot": None}, {"copy": "C0000102", "slot": None}]
    assert "bin_full" not in m.fault_names()
    assert sim.ctl.insert_return("C0000103", timeout=5)["outcome"] == "accepted"


def test_a_bin_sensor_that_says_full_closes_returns(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK)
    sim.ctl.fault("bin_full")
    wait_until(lambda: "bin_full" in m.fault_names(), what="bin_full fault")
    assert m.status()["returns_closed_reason"] == "the return bin is full"
    assert events_of("device.fault")[0][1]["kind"] == "bin_full"
    reply = sim.ctl.insert_return("C0000101", timeout=5)
    assert (reply["outcome"], reply["reason"]) == ("refused", "the return bin is full")
    # Staff may close returns too; the reason is then theirs.
    m.unlock_service_door()
    sim.ctl.open_door()
    sim.ctl.empty_bin()
    sim.ctl.close_door()
    wait_until(lambda: m.status()["returns_open"], what="returns open after emptying")
    m.set_returns(False)
    assert m.status()["returns_closed_reason"] == "returns are closed at this machine"
    assert sim.ctl.insert_return("C0000101", timeout=5)["outcome"] == "refused"


def test_restock_and_audit_after_the_technician_closes_the_door(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK)
    m.unlock_service_door()
    sim.ctl.open_door()
    wait_until(lambda: m.status()["door"] == "open", what="door open at the node")
    assert sim.ctl.remove(1) == "C0000001"
    sim.ctl.load(4, "C0000004")
    sim.ctl.load(5, "C0000555")  # a copy this node had never seen
    sim.ctl.close_door()
    wait_until(lambda: events_of("stock.audit"), what="audit after the visit")
    assert events_of("stock.removed", "stock.loaded") == [
        ("stock.removed", {"copy": "C0000001", "slot": 1}),
        ("stock.loaded", {"copy": "C0000004", "slot": 4}),
        ("stock.loaded", {"copy": "C0000555", "slot": 5})]
    audit = events_of("stock.audit")[0][1]
    assert audit["reason"] == "door_closed" and audit["missing"] == []
    assert {k: v for k, v in audit["slots"].items() if v} == {
        "2": "C0000002", "3": "C0000003", "4": "C0000004", "5": "C0000555"}
    assert Copy.get_by_id("C0000001").here is False
    assert (Copy.get_by_id("C0000555").slot, Copy.get_by_id("C0000555").here) == (5, True)
    present(m, sim, "R0003")
    assert [o["copy"] for o in m.offer("R0003")] == ["C0000002", "C0000003", "C0000004",
                                                     "C0000555"]
    assert m.status()["door"] == "closed"


def test_door_left_open_is_a_fault_until_it_closes(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK)
    sim.ctl.open_door(key=True)
    wait_until(lambda: "door_left_open" in m.fault_names(), 5.0, what="door_left_open")
    with pytest.raises(Exception) as exc:
        present(m, sim, "R0001")
        m.checkout("R0001", "C0000001")
    assert refusal(exc) == "service"
    sim.ctl.close_door()
    wait_until(lambda: "door_left_open" not in m.fault_names(), what="fault cleared")
    assert [b["state"] for _, b in events_of("device.fault")] == ["raised", "cleared"]


def test_controller_lost_says_offline_at_once_and_a_fault_after_a_while(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK)
    present(m, sim, "R0001")
    sim.kill()
    wait_until(lambda: not m.status()["online"], 3.0, what="offline in status")
    with pytest.raises(Exception) as exc:
        m.checkout("R0001", "C0000001")
    assert refusal(exc) == "machine_offline"
    assert m.status()["returns_closed_reason"] == "the machine is offline"
    wait_until(lambda: "controller_lost" in m.fault_names(), FAST.controller_lost_after + 3,
               what="controller_lost")
    bench.sim()  # the power comes back
    wait_until(lambda: m.status()["ready"], 10.0, what="back and reconciled")
    wait_until(lambda: not m.fault_names(), 5.0, what="every link fault cleared")
    # (While it was dead, the kernel may have given its pty's number to another process:
    # a controller_mismatch may come and go too. The serial check is what keeps it out.)
    lost = [b["state"] for _, b in events_of("device.fault") if b["kind"] == "controller_lost"]
    assert lost == ["raised", "cleared"]


def test_controller_reboot_is_noticed_and_served_after(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2", loaded=STOCK)
    m = bench.node(STOCK)
    boot = m.status()["controller"]["boot_id"]
    sim.ctl.reboot()
    wait_until(lambda: m.status()["ready"] and m.status()["controller"]["boot_id"] != boot,
               5.0, what="re-handshake and reconcile")
    wait_until(lambda: [(b["kind"], b["state"]) for _, b in events_of("device.fault")] == [
        ("controller_rebooted", "raised"), ("controller_rebooted", "cleared")], 5.0,
        what="the reboot raised, then cleared once reconciled")
    present(m, sim, "R0001")
    assert m.checkout("R0001", "C0000001").copy == "C0000001"


def test_another_controller_is_refused_until_adopted(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK, wait=False)
    wait_until(lambda: m.ready, 10.0, what="first controller pinned")
    m.stop()
    sim.stop()
    bench.state.unlink()  # a new board: a new state file, a new serial
    other = bench.sim(loaded=STOCK)
    m2 = bench.node(STOCK, wait=False)
    wait_until(lambda: "controller_mismatch" in m2.fault_names(), 5.0, what="mismatch fault")
    assert not m2.status()["online"]
    assert "adopt" in (m2.status()["problem"] or "")
    m2.adopt_controller()
    wait_until(lambda: m2.status()["ready"], 10.0, what="adopted and online")
    assert m2.status()["controller"]["serial"] == other.ctl.state()["serial"]


def test_outcome_lost_on_a_dead_line_is_settled_when_it_comes_back(bench: Bench) -> None:
    sim = bench.sim("--take-timeout", "30", loaded=STOCK)
    m = bench.node(STOCK)
    present(m, sim, "R0001")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(m.checkout, "R0001", "C0000003")
        wait_until(lambda: sim.ctl.state()["delivery"], what="book in the door")
        sim.ctl.line(connected=False)  # the cable is pulled...
        wait_until(lambda: not m.online, 5.0, what="offline")
        with pytest.raises(Exception) as exc:
            pending.result(timeout=10)
        assert refusal(exc) == "outcome_unknown"
    assert sim.ctl.take_item() == "C0000003"  # ...while the reader takes the book
    assert loans() == []  # not yet: the node cannot know
    sim.ctl.line(connected=True)
    wait_until(lambda: loans() == [("C0000003", "R0001")], 10.0, what="the loan, settled")
    wait_until(lambda: m.status()["ready"], 5.0, what="ready again")
    assert [t for t, _ in events_of("loan.checkout")] == ["loan.checkout"]
    assert DispenseIntent.select().where(DispenseIntent.state == "pending").count() == 0


def test_a_restock_while_the_node_was_down_is_a_visit_not_a_discrepancy(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    m = bench.node(STOCK)
    m.stop()  # the node is down (a power cut at the station, an update)
    sim.ctl.open_door(key=True)
    assert sim.ctl.remove(2) == "C0000002"
    sim.ctl.load(4, "C0000004")
    sim.ctl.close_door()
    again = bench.node(STOCK)
    wait_until(lambda: events_of("stock.loaded"), 10.0, what="the visit found")
    assert events_of("stock.removed", "stock.loaded") == [
        ("stock.removed", {"copy": "C0000002", "slot": 2}),
        ("stock.loaded", {"copy": "C0000004", "slot": 4})]
    assert all(b["missing"] == [] for _, b in events_of("stock.audit"))
    assert again.status()["ready"]


def test_with_the_door_open_the_slots_wait_for_it_to_close(bench: Bench) -> None:
    sim = bench.sim(loaded=STOCK)
    sim.ctl.open_door(key=True)
    sim.ctl.remove(1)
    m = bench.node(STOCK)  # starts while a technician is at work
    assert events_of("stock.audit") == [] and m.status()["door"] == "open"
    sim.ctl.close_door()
    wait_until(lambda: events_of("stock.removed"), what="the scan after the door closed")
    assert events_of("stock.removed") == [("stock.removed", {"copy": "C0000001", "slot": 1})]
