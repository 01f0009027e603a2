"""The job's name for its uid: /etc/passwd and /etc/group as the job container sees them.

Each job runs as a uid of its own (``workers.slots``), which the image's /etc/passwd does not
list. Tools that ask who they are (``getpwuid``: pip, git, ssh, Python's ``getpass``) need an
entry, so each container gets two small generated files, bound read-only over the image's:
root and nobody as every Debian image has them, and ``appuser`` with the job's uid, gid and
home (/home/appuser).
"""

from __future__ import annotations

import os

PASSWD, GROUP = "passwd", "group"
TARGETS = {PASSWD: "/etc/passwd", GROUP: "/etc/group"}
USER = "appuser"
HOME = "/home/appuser"


def passwd_text(uid: int, gid: int) -> str:
    return ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{USER}:x:{uid}:{gid}:Airlock job:{HOME}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")


def group_text(gid: int) -> str:
    return f"root:x:0:\n{USER}:x:{gid}:\nnogroup:x:65534:\n"


def mounts(host_folder: str) -> list[dict[str, object]]:
    """The engine's Mounts for the two files (pure): missing files fail the create."""
    return [{"Type": "bind", "Source": os.path.join(host_folder, which), "Target": target,
             "ReadOnly": True} for which, target in TARGETS.items()]


def write(dir_fd: int, uid: int, gid: int) -> None:
    """Write both files into the container's own folder (opened by the caller)."""
    for which, text in ((PASSWD, passwd_text(uid, gid)), (GROUP, group_text(gid))):
        fd = os.open(which, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o644)  # past the umask
        finally:
            os.close(fd)
