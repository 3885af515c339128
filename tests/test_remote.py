"""Checks run outside the learner's process (attn_course.checks.remote), as the classroom grader runs them.

Every check of the mutation suite runs twice on the same implementation: called directly (the
notebook's self-check) and through a socket, with the implementation served from another thread by
``remote.serve`` (grading). Both must agree: every broken implementation caught with the same kind
and message, every reference and correct variant passing. Then the wire format itself: answers that
are not plain data never become objects on the grader's side.
"""
import base64
import contextlib
import json
import socket
import threading
import time

import pytest
import torch
from test_mutation_suite import KEY, VARIANT_CASES, as_called, check_of, entry_id, resolve

import attn_course.broken
from attn_course import checks
from attn_course.checks import remote


@contextlib.contextmanager
def served(obj, deadline_s=60.0):
    """``obj`` as a ``remote.Remote``, answered by ``remote.serve`` in a thread (the learner's side)."""
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=remote.serve, args=(theirs, {None: {"fn": obj}}), daemon=True)
    thread.start()
    connection = remote.Connection(ours, time.monotonic() + deadline_s)
    try:
        yield remote.Environment(connection, None).get("fn")
    finally:
        connection.close()
        thread.join(5)
        theirs.close()


def run_both(entry, obj, thorough=True):
    """(local CheckFailure or None, remote CheckFailure or None) for one key entry."""
    outcomes = []
    for mode in ("local", "remote"):
        torch.manual_seed(0)
        context = served(as_called(entry, obj)) if mode == "remote" else contextlib.nullcontext(as_called(entry, obj))
        with context as fn:
            try:
                check_of(entry)(fn, thorough=thorough, **entry.get("check_kwargs", {}))
                outcomes.append(None)
            except checks.CheckFailure as err:
                outcomes.append(err)
    return outcomes


@pytest.mark.parametrize("entry", KEY, ids=entry_id)
def test_a_broken_implementation_fails_the_same_way_in_both_processes(entry):
    local, far = run_both(entry, getattr(attn_course.broken, entry["broken"]))
    assert local is not None and far is not None, f"{entry['broken']}: local {local}, remote {far}"
    assert (far.kind, str(far)) == (local.kind, str(local))


@pytest.mark.parametrize("entry", KEY, ids=entry_id)
def test_the_reference_passes_in_both_processes(entry):
    assert run_both(entry, resolve(entry["reference"])) == [None, None]


@pytest.mark.parametrize("check_name, fn", VARIANT_CASES,
                         ids=[f"{n}-{getattr(f, '__name__', 'lambda')}" for n, f in VARIANT_CASES])
def test_a_correct_variant_passes_through_the_socket(check_name, fn):
    torch.manual_seed(0)
    with served(fn) as handle:
        getattr(checks, check_name)(handle, thorough=True)


# ----------------------------------------------------------------- what crosses the socket
def _roundtrip(value):
    return remote.decode(json.loads(json.dumps(remote.encode(value, {}))))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
                                   torch.int64, torch.int32, torch.uint8, torch.bool])
def test_tensors_come_back_bit_for_bit_as_exact_tensors(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 4, 5, generator=g) * 3).to(dtype).transpose(0, 2)            # not contiguous
    y = _roundtrip(x)
    assert type(y) is torch.Tensor and y.dtype == dtype and y.shape == x.shape and torch.equal(y, x)
    assert _roundtrip(torch.empty(0, 3, dtype=dtype)).shape == (0, 3)


def test_a_tensor_subclass_comes_back_as_a_plain_tensor_with_its_data():
    class Liar(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func in (torch.allclose, torch.equal):
                return True
            return super().__torch_function__(func, types, args, kwargs or {})

    liar = torch.zeros(2, 3).as_subclass(Liar)
    assert torch.allclose(liar, torch.ones(2, 3))                        # it lies where it lives
    back = _roundtrip(liar)
    assert type(back) is torch.Tensor and not torch.allclose(back, torch.ones(2, 3))


def test_plain_values_and_nesting_survive():
    value = (1, 2.5, "text", None, True, [torch.arange(3), (float("nan"), float("inf"))], torch.Size([2, 3]))
    back = _roundtrip(value)
    assert back[:5] == (1, 2.5, "text", None, True) and torch.equal(back[5][0], torch.arange(3))
    assert back[5][1][0] != back[5][1][0] and back[5][1][1] == float("inf") and back[6] == (2, 3)


@pytest.mark.parametrize("forged", [
    {"tensor": {"dtype": "float32", "shape": [2, 2], "requires_grad": False, "data": base64.b64encode(b"x" * 12).decode()}},
    {"tensor": {"dtype": "object", "shape": [1], "requires_grad": False, "data": ""}},
    {"tensor": {"dtype": "float32", "shape": [-1], "requires_grad": False, "data": ""}},
    {"tensor": {"dtype": "float32", "shape": [1], "data": "AAAAAA=="}},
    {"pickle": "gASVAAAAAAAAAAB9lC4="},
    ["a", "list", "where", "a value", "goes"],
    {"tuple": "not a list"},
    {"list": [{"list": []}] * 2, "extra": 1},
])
def test_malformed_answers_are_refused(forged):
    with pytest.raises(remote.Malformed):
        remote.decode(forged)


def test_an_answer_nested_too_deep_is_refused():
    deep = 1
    for _ in range(100):
        deep = {"list": [deep]}
    with pytest.raises(remote.Malformed):
        remote.decode(deep)


def test_objects_stay_on_the_learner_side_as_handles():
    module = torch.nn.Linear(3, 2)
    with served(lambda: module) as make:
        handle = make()
        assert isinstance(handle, remote.Remote) and handle.type_name == "Linear"
        assert remote.is_instance(handle, torch.nn.Module) and not remote.is_instance(handle, torch.nn.Embedding)
        assert torch.equal(handle.weight, module.weight.detach())                    # an attribute: plain data
        x = torch.randn(4, 3)
        assert torch.allclose(handle(x), module(x).detach())


def test_errors_keep_their_kind_and_message():
    class Mine(Exception):
        pass

    def raises(kind):
        raise {"nie": NotImplementedError("write me"), "value": ValueError("bad shape"), "mine": Mine("custom")}[kind]

    with served(raises) as fn:
        with pytest.raises(NotImplementedError, match="write me"):
            fn("nie")
        with pytest.raises(ValueError, match="bad shape"):
            fn("value")
        with pytest.raises(remote.LearnerError) as info:
            fn("mine")
        assert info.value.type_name == "Mine" and str(info.value) == "custom"


def test_a_function_that_never_returns_fails_its_case_in_time():
    with served(lambda *args: time.sleep(30), deadline_s=1.0) as fn:
        started = time.monotonic()
        with pytest.raises(checks.CheckFailure, match="gave no answer: no answer before the time limit"):
            checks.call_learner(fn, (torch.zeros(1),), "a case")
        assert time.monotonic() - started < 5
        with pytest.raises(checks.CheckFailure, match="gave no answer"):                # and the rest fail at once
            checks.call_learner(fn, (torch.zeros(1),), "the next case")


def test_gradients_are_computed_where_the_function_lives():
    def fn(x, w):
        return (x * w).tanh(), x.detach()

    x, w, c = torch.randn(3, 4), torch.randn(4), torch.randn(3, 4)
    local = checks.call_learner_grad(fn, (x, w), "case", wrt=(0, 1), pick=(0,), weight=c)
    with served(fn) as handle:
        far = checks.call_learner_grad(handle, (x, w), "case", wrt=(0, 1), pick=(0,), weight=c)
        none = checks.call_learner_grad(handle, (x, w), "case", wrt=(0,), pick=(1,))
    assert all(torch.allclose(a, b) for a, b in zip(local[1], far[1]))
    assert torch.allclose(far[0][0], local[0][0].detach()) and none[1] == [None]
