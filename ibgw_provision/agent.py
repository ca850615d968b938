"""The remote half of ibgw: read facts, apply steps. Standard library only.

Sent over SSH on stdin and run by the host's python3 (never written to disk,
never in argv), it answers one JSON request with JSON lines on stdout: events
while applying, then a final {"result": ...}. Every step is idempotent, and a
file is replaced only by an atomic rename after its validator accepts it.
"""

import base64
import grp
import hashlib
import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

PRIVILEGED_GROUPS = ("sudo", "adm", "wheel", "root")


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def sh(argv, check=True, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise StepError(f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


class StepError(Exception):
    pass


# ---- facts ---------------------------------------------------------------

def facts(req):
    return {
        "python": platform.python_version(),
        "arch": platform.machine(),
        "glibc": platform.libc_ver()[1],
        "packages": packages(req["packages"]),
        "user": user(req["user"]),
        "paths": {p: stat(p) for p in req["paths"]},
        "content": {p: read(p) for p, want in req.get("content_unless", {}).items() if sha256_of(p) not in (want, None)},
        "units": {u: unit(u) for u in req["units"]},
        "markers": {p: read(p) for p in req["markers"]},
    }


def packages(names):
    if not names:
        return {}
    out = sh(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"] + names, check=False).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return {n: n in installed for n in names}


def user(name):
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    groups = sorted(g.gr_name for g in grp.getgrall() if name in g.gr_mem or g.gr_gid == entry.pw_gid)
    return {"home": entry.pw_dir, "shell": entry.pw_shell, "uid": entry.pw_uid, "groups": groups}


def stat(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = "dir" if os.path.isdir(path) and not os.path.islink(path) else "file"
    return {"kind": kind, "mode": st.st_mode & 0o7777, "owner": name_of(pwd.getpwuid, st.st_uid),
            "group": name_of(grp.getgrgid, st.st_gid), "sha256": sha256_of(path) if kind == "file" else None}


def name_of(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def sha256_of(path):
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def unit(name):
    enabled = sh(["systemctl", "is-enabled", name], check=False).stdout.strip()
    active = sh(["systemctl", "is-active", name], check=False).stdout.strip()
    return {"enabled": enabled, "active": active}


# ---- steps ---------------------------------------------------------------

def step_apt(step):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sh(["apt-get", "update", "-qq"], env=env)
    sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + step["packages"], env=env)


def step_user(step):
    name = step["name"]
    if user(name) is None:
        sh(["useradd", "--system", "--user-group", "--home-dir", step["home"], "--no-create-home",
            "--shell", "/usr/sbin/nologin", name])
    for group in user(name)["groups"]:
        if group in PRIVILEGED_GROUPS:
            sh(["gpasswd", "-d", name, group])


def step_dir(step):
    os.makedirs(step["path"], exist_ok=True)
    set_attrs(step["path"], step)


def step_file(step):
    path = step["path"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".ibgw-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64decode(step["content"]))
            fh.flush()
            os.fsync(fh.fileno())
        set_attrs(tmp, step)
        if step.get("validate"):
            sh([arg.replace("{}", tmp) for arg in step["validate"]])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def step_attrs(step):
    set_attrs(step["path"], step)


def set_attrs(path, step):
    os.chown(path, pwd.getpwnam(step["owner"]).pw_uid, grp.getgrnam(step["group"]).gr_gid)
    os.chmod(path, step["mode"])


def step_venv(step):
    """Install ibgw from uploaded wheels into a fresh venv; the stamp is written last."""
    venv = step["path"]
    shutil.rmtree(venv, ignore_errors=True)
    sh([sys.executable, "-m", "venv", venv])
    sh([f"{venv}/bin/pip", "install", "-q", "--no-index", "--find-links", step["wheels"], step["requirement"]])
    with open(f"{venv}/{step['marker']}", "w") as fh:
        fh.write(step["stamp"])


def step_install(step):
    """Unpack IBC's zip, or run IB Gateway's installer, into dest; the stamp is written last."""
    upload, dest = step["upload"], step["dest"]
    if sha256_of(upload) != step["sha256"]:
        raise StepError(f"{upload}: sha256 differs from the pinned one after upload")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    if step["type"] == "zip":
        shutil.unpack_archive(upload, dest, "zip")
        for root, _, names in os.walk(dest):
            for name in names:
                if name.endswith(".sh"):
                    os.chmod(os.path.join(root, name), 0o755)
    else:
        sh(["sh", upload, "-q", "-dir", dest])
    owner = pwd.getpwnam(step["owner"])
    for root, dirs, names in os.walk(dest):
        for name in [root] + [os.path.join(root, n) for n in dirs + names]:
            os.lchown(name, owner.pw_uid, owner.pw_gid)
    with open(os.path.join(dest, step["stamp"]), "w") as fh:
        fh.write(step["sha256"])


def step_systemd(step):
    if step["daemon_reload"]:
        sh(["systemctl", "daemon-reload"])
    for verb in ("enable", "start", "restart", "reload"):
        if step[verb]:
            sh(["systemctl", verb] + step[verb])
    stays_up(step["start"] + step["restart"])


def stays_up(units, seconds=3.0):
    """A started simple service may die at once: see that each is still active a moment later."""
    time.sleep(seconds if units else 0)
    down = [u for u in units if unit(u)["active"] != "active"]
    if down:
        logs = sh(["journalctl", "--no-pager", "-n", "5", "-o", "cat"] + [f"--unit={u}" for u in down], check=False)
        raise StepError(f"not running after start: {', '.join(down)}; last log lines: {logs.stdout.strip()}")


STEPS = {"apt": step_apt, "user": step_user, "dir": step_dir, "file": step_file, "attrs": step_attrs,
         "venv": step_venv, "install": step_install, "systemd": step_systemd}


def apply(req):
    done = 0
    for step in req["steps"]:
        emit(event="start", task=step["task"])
        try:
            STEPS[step["kind"]](step)
        except (StepError, OSError, KeyError) as exc:
            emit(event="failed", task=step["task"], error=str(exc))
            return {"applied": done, "failed": step["task"], "error": str(exc)}
        emit(event="done", task=step["task"])
        done += 1
    return {"applied": done, "failed": None}


def main():
    req = json.loads(sys.stdin.buffer.read())
    emit(result={"facts": facts, "apply": apply}[req["op"]](req))


if __name__ == "__main__":
    main()
