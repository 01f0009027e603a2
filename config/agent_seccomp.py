"""The agent profile's seccomp filter, derived from Airlock's job profile by a pure function.

``agent_profile(base_text)`` is ``config/seccomp.json`` plus only what an unprivileged,
non-setuid bubblewrap needs for the inner sandbox of Claude Code and srt (a new user, mount,
pid and net namespace, a fresh /proc, ``pivot_root``, then detaching the old root):

* ``clone`` and ``unshare`` may carry CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET.
  The base says "no namespace flag" with one ALLOW rule ``arg0 & MASK == 0`` (MASK holds every
  namespace flag) and one EPERM rule per flag, ``arg0 & FLAG == FLAG``. The four flags leave
  MASK and their EPERM rules go; CGROUP, UTS, IPC (and TIME for unshare) stay refused, their
  rules still disjoint from the narrowed ALLOW.
* ``mount``, ``pivot_root`` and ``umount2`` leave the list refused outright, and are allowed.

Everything else stays as it is: ``clone3`` (ENOSYS), ``setns``, the new mount API (fsopen,
fsmount, open_tree, move_mount, mount_setattr), keyctl, bpf, io_uring, chroot, the socket
families. A base of a shape the derivation does not recognise raises ValueError: a change of
config/seccomp.json that would make the two drift fails loudly instead of guessing.
"""

from __future__ import annotations

import copy
import json
from typing import Any

__all__ = ["ADMITTED_CALLS", "ADMITTED_FLAGS", "agent_profile", "rule_diff"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
ADMITTED_FLAGS = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET
ADMITTED_CALLS = ("mount", "pivot_root", "umount2")
NAMESPACE_CALLS = ("clone", "unshare")
FLAGS_PER_CALL = 4  # the EPERM rules of USER, NS, PID and NET, for each of clone and unshare
Rule = dict[str, Any]


def _masked_eq(rule: Rule, name: str, action: str) -> dict[str, Any] | None:
    """The one condition of ``name(arg0 & value == valueTwo) -> action``, else None."""
    args = rule.get("args") or []
    if rule.get("names") != [name] or rule.get("action") != action or len(args) != 1:
        return None
    cond: dict[str, Any] = args[0]
    ok = cond.get("index") == 0 and cond.get("op") == "SCMP_CMP_MASKED_EQ"
    return cond if ok else None


def _no_namespace_allow(rule: Rule, name: str) -> bool:
    cond = _masked_eq(rule, name, "SCMP_ACT_ALLOW")
    return cond is not None and cond.get("valueTwo", 0) == 0


def _admitted_refusal(rule: Rule, name: str) -> bool:
    """``name(arg0 & F == F) -> ERRNO`` for one flag F the agent admits."""
    cond = _masked_eq(rule, name, "SCMP_ACT_ERRNO")
    if cond is None or cond.get("value") != cond.get("valueTwo"):
        return False
    flag = int(cond["value"])
    return flag.bit_count() == 1 and bool(flag & ADMITTED_FLAGS)


def _narrowed(rule: Rule, name: str) -> Rule:
    mask = int(rule["args"][0]["value"])
    if mask & ADMITTED_FLAGS != ADMITTED_FLAGS:
        raise ValueError(f"{name}: the base's ALLOW mask {mask:#x} lacks a namespace flag")
    out = copy.deepcopy(rule)
    out["args"][0]["value"] = mask & ~ADMITTED_FLAGS
    out["comment"] = (f"{name} without the cgroup, uts or ipc namespace flags (agent profile: "
                      "user, mount, pid and net namespaces admitted for bubblewrap)")
    return out


def _refused_outright(rule: Rule) -> bool:
    return (rule.get("action") == "SCMP_ACT_ERRNO" and not rule.get("args")
            and bool(set(rule.get("names") or ()) & set(ADMITTED_CALLS)))


def agent_profile(base_text: str) -> str:
    """The agent profile's JSON text, derived from the base profile's JSON text."""
    base = json.loads(base_text)
    if not isinstance(base, dict) or not isinstance(base.get("syscalls"), list):
        raise ValueError("the base profile has no syscalls list")
    rules: list[Rule] = []
    narrowed = {name: 0 for name in NAMESPACE_CALLS}
    dropped = {name: 0 for name in NAMESPACE_CALLS}
    freed: set[str] = set()
    for rule in base["syscalls"]:
        name = next((n for n in NAMESPACE_CALLS if rule.get("names") == [n]), None)
        if name is not None and _no_namespace_allow(rule, name):
            rules.append(_narrowed(rule, name))
            narrowed[name] += 1
        elif name is not None and _admitted_refusal(rule, name):
            dropped[name] += 1
        elif _refused_outright(rule):
            kept = copy.deepcopy(rule)
            kept["names"] = [n for n in rule["names"] if n not in ADMITTED_CALLS]
            freed |= set(rule["names"]) & set(ADMITTED_CALLS)
            if kept["names"]:
                rules.append(kept)
        else:
            rules.append(copy.deepcopy(rule))
    _check_shape(narrowed, dropped, freed)
    rules.append({"comment": "agent profile: bubblewrap sets up its mount namespace (a fresh "
                             "/proc, binds, pivot_root, detaching the old root)",
                  "names": list(ADMITTED_CALLS), "action": "SCMP_ACT_ALLOW"})
    profile = copy.deepcopy(base)
    profile["syscalls"] = rules
    profile["comment"] = (f"{base.get('comment', '')} Agent profile, derived by "
                          "config/agent_seccomp.py: clone and unshare may create user, mount, "
                          "pid and net namespaces; mount, pivot_root and umount2 are allowed.")
    return json.dumps(profile, indent=2) + "\n"


def _check_shape(narrowed: dict[str, int], dropped: dict[str, int], freed: set[str]) -> None:
    for name in NAMESPACE_CALLS:
        if narrowed[name] != 1:
            raise ValueError(f"the base profile has {narrowed[name]} '{name} without namespace "
                             "flags' ALLOW rules, not one")
        if dropped[name] != FLAGS_PER_CALL:
            raise ValueError(f"{name}: {dropped[name]} per-flag refusals of user/mount/pid/net"
                             f" in the base profile, not {FLAGS_PER_CALL}")
    missing = sorted(set(ADMITTED_CALLS) - freed)
    if missing:
        raise ValueError(f"the base profile does not refuse {missing} outright")


# --- the difference, said (docs, the closing note) -------------------------------------------

def _key(rule: Rule) -> str:
    return json.dumps({k: v for k, v in rule.items() if k != "comment"}, sort_keys=True)


def _said(rule: Rule) -> str:
    action = str(rule["action"]).removeprefix("SCMP_ACT_")
    if action == "ERRNO":
        action += f"({rule.get('errnoRet', '')})"
    conds = [f"arg{c['index']} & {c['value']:#x} == {c.get('valueTwo', 0):#x}"
             if c["op"] == "SCMP_CMP_MASKED_EQ"
             else f"arg{c['index']} {c['op'].removeprefix('SCMP_CMP_')} {c['value']:#x}"
             for c in rule.get("args") or []]
    return f"{','.join(rule['names'])}({' && '.join(conds) or '*'}) -> {action}"


def rule_diff(base_text: str, derived_text: str) -> list[str]:
    """Rules only in the base ("-") and only in the derived profile ("+"), comments ignored;
    an unconditional list that lost names says which."""
    base = json.loads(base_text)["syscalls"]
    derived = json.loads(derived_text)["syscalls"]
    base_keys, derived_keys = {_key(r) for r in base}, {_key(r) for r in derived}
    shrunk = {id(b): d for b in base for d in derived
              if not b.get("args") and not d.get("args") and b["action"] == d["action"]
              and set(d["names"]) < set(b["names"])}
    lines = []
    for rule in base:
        if _key(rule) in derived_keys:
            continue
        if id(rule) in shrunk:
            gone = sorted(set(rule["names"]) - set(shrunk[id(rule)]["names"]))
            lines.append(f"- {gone} from the {str(rule['action']).removeprefix('SCMP_ACT_')}"
                         f"({rule.get('errnoRet', '')}) list refused outright")
        else:
            lines.append(f"- {_said(rule)}")
    kept = [id(d) for d in shrunk.values()]
    lines += [f"+ {_said(r)}" for r in derived if _key(r) not in base_keys and id(r) not in kept]
    return lines
