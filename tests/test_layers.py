"""Who may import whom (docs/contracts.md, "Modules"): the rules, checked on every import statement
of the package, those inside functions included."""

from __future__ import annotations

from test_import_cycles import PACKAGE, imports_of, package_modules

HUB_SIDE_AND_TOP = ("service", "hub", "spawners", "cli", "client", "server", "demo", "_jupyter")


def _graph() -> dict[str, set[str]]:
    modules = package_modules()
    short = {m: m[len(PACKAGE) + 1:] if m != PACKAGE else "" for m in modules}
    return {short[m]: {short[d] for d in imports_of(m, path, modules)}
            for m, path in modules.items()}


def _under(name: str, rooms: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in rooms)


def test_the_core_never_imports_the_service_the_hub_side_or_the_clients():
    """catalog, policy, config_files, audit, governance, events, tickets, sources, store, errors,
    vocabulary and keys know nothing of HTTP handlers, the hub, the command or the clients."""
    for module, deps in _graph().items():
        if module and not _under(module, HUB_SIDE_AND_TOP + ("__main__",)):
            assert not {d for d in deps if _under(d, HUB_SIDE_AND_TOP)}, module


def test_policy_imports_only_the_model():
    assert _graph()["policy"] <= {"catalog"}


def test_the_user_side_imports_nothing_of_the_service_side():
    """The client and the server extension run in the user's (untrusted) server: they carry no
    service code, and ask the service for everything (endpoint.py: where it is, how to ask)."""
    graph = _graph()
    user_side = {d for d in graph if _under(d, ("client", "server", "endpoint"))}
    for module, deps in graph.items():
        if _under(module, ("client", "server", "endpoint")):
            assert deps <= user_side | SHARED_WITH_THE_USER_SIDE, module


# The filter language alone: the client applies a caller's own `where` to Parquet byte ranges the
# service sent whole (no mask, no row filter), with the very parser and Arrow compilation the
# service uses. It is pure (no I/O, no keys), which the test below holds it to.
SHARED_WITH_THE_USER_SIDE = {"sources.filters"}


def test_what_the_user_side_shares_imports_nothing_of_the_package():
    graph = _graph()
    for module in SHARED_WITH_THE_USER_SIDE:
        assert graph[module] == set(), module


def test_the_data_plane_imports_no_use_case_database_or_audit():
    for module, deps in _graph().items():
        if _under(module, ("sources",)):
            assert not {d for d in deps
                        if _under(d, ("governance", "events", "tickets", "store", "audit"))}, module


def test_the_service_is_not_the_hub_side():
    for module, deps in _graph().items():
        if _under(module, ("service",)):
            assert not {d for d in deps if _under(d, ("hub", "spawners", "cli", "client",
                                                       "server", "demo"))}, module
