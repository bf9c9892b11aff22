"""Build the Debian package: `make deb` (or /usr/bin/python3 packaging/build_deb.py --out dist).

The application goes into its own venv under /opt/facility-twin, made with Debian's python3 (so the
package depends on it) and every extra installed from the wheel of this tree. Around it: both
systemd units, /usr/bin links, the example configurations as conffiles in /etc, Grafana
provisioning and dashboards in /usr/share/facility-twin/grafana, the documentation in
/usr/share/doc/facility-twin (which the units' Documentation= points at), and the maintainer
scripts in packaging/debian (users and state directories through systemd-sysusers and
systemd-tmpfiles, byte-code compiled on install, everything removed on purge).

dpkg-deb assembles the archive; nothing here needs root (--root-owner-group). Only the standard
library is used, so Debian's python3 without pip can run it.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = Path(__file__).resolve().parent / "debian"
PREFIX = "/opt/facility-twin"
PYTHON = "/usr/bin/python3"
MAINTAINER = "facility-twin maintainers <maintainers@facility-twin.invalid>"
DOCS = {  # source (relative to ROOT) -> name under /usr/share/doc/facility-twin
    "README.md": "README.md",
    "CHANGELOG.md": "CHANGELOG.md",
    "configs/grafana/README.md": "grafana.md",
    "agent/connectors/modbus/README.md": "connectors/modbus.md",
    "agent/connectors/opcua/README.md": "connectors/opcua.md",
    "agent/connectors/mqtt/README.md": "connectors/mqtt.md",
    "agent/analytics/README.md": "vibration-analytics.md",
    "packaging/README.md": "packaging.md",
}
EXAMPLES = ["configs/agent.example.toml", "configs/collector.example.toml"]
COMMANDS = ["twin-agent", "twin-collector", "twin-sim", "twin-demo"]


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (ROOT / "runtime" / "__init__.py").read_text(), re.M)
    if match is None:
        raise SystemExit("runtime/__init__.py: no __version__")
    return match.group(1)


def run(*argv: str | Path, **kw: object) -> None:
    print("+", " ".join(str(a) for a in argv), flush=True)
    subprocess.run([str(a) for a in argv], check=True, **kw)  # type: ignore[call-overload]


def build_venv(work: Path, root: Path) -> None:
    venv = root / PREFIX.lstrip("/")
    run(PYTHON, "-m", "venv", venv)
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    wheels = work / "wheel"
    run(*pip, "wheel", "--no-deps", "-q", "-w", wheels, ROOT)
    (wheel,) = wheels.glob("facility_twin-*.whl")
    run(*pip, "install", "-q", "--no-compile", f"{wheel}[all]")
    # dpkg manages this environment: no installer inside it.
    run(*pip, "uninstall", "-q", "-y", "pip", "setuptools")
    for leftover in [*venv.glob("bin/pip*"), venv / "bin" / "Activate.ps1"]:
        leftover.unlink(missing_ok=True)
    for cache in list(venv.rglob("__pycache__")):
        shutil.rmtree(cache)
    for direct_url in venv.rglob("direct_url.json"):  # names the build folder; means nothing installed
        direct_url.unlink()
    # The venv was made under the staging folder: its scripts and pyvenv.cfg must name /opt.
    staged = str(venv).encode()
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if staged in data:
                path.write_bytes(data.replace(staged, PREFIX.encode()))
    stale = [str(p) for p in venv.rglob("*") if p.is_file() and not p.is_symlink() and staged in p.read_bytes()]
    if stale:
        raise SystemExit("files still naming the staging folder:\n" + "\n".join(stale))
    normalise_libraries(venv / "lib")


def normalise_libraries(lib: Path) -> None:
    """What dh_fixperms does: no execute bits in the library tree (nothing there is run directly).

    Shared objects are left as the wheels publish them: auditwheel rewrote them with patchelf, and
    `strip` corrupts such files ("ELF load command address/offset not page-aligned")."""
    for path in lib.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def install(src: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def gzip_file(text: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(text)


def lay_out_files(root: Path, ver: str, epoch: int) -> None:
    for unit in ("twin-agent.service", "twin-collector.service"):
        install(ROOT / "systemd" / unit, root / "usr/lib/systemd/system" / unit)
    install(DEBIAN / "sysusers.conf", root / "usr/lib/sysusers.d/facility-twin.conf")
    install(DEBIAN / "tmpfiles.conf", root / "usr/lib/tmpfiles.d/facility-twin.conf")
    install(ROOT / "configs/agent.example.toml", root / "etc/twin-agent/agent.toml")
    install(ROOT / "configs/collector.example.toml", root / "etc/twin-collector/collector.toml")
    bindir = root / "usr/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        (bindir / command).symlink_to(f"{PREFIX}/bin/{command}")

    doc = root / "usr/share/doc/facility-twin"
    for src, name in DOCS.items():
        install(ROOT / src, doc / name)
    for src in EXAMPLES:
        install(ROOT / src, doc / "examples" / Path(src).name)
    year = time.gmtime(epoch).tm_year
    (doc / "copyright").write_text((DEBIAN / "copyright.in").read_text().replace("@YEAR@", str(year)))
    changelog = (f"facility-twin ({ver}) unstable; urgency=medium\n\n"
                 f"  * Release {ver}: see /usr/share/doc/facility-twin/CHANGELOG.md\n\n"
                 f" -- {MAINTAINER}  {formatdate(epoch, usegmt=False)}\n")
    gzip_file(changelog.encode(), doc / "changelog.gz")

    grafana = root / "usr/share/facility-twin/grafana"
    for src in sorted((ROOT / "configs/grafana").rglob("*")):
        if src.is_file() and src.suffix in (".json", ".yaml"):
            install(src, grafana / src.relative_to(ROOT / "configs/grafana"))
    provider = grafana / "provisioning/dashboards/facility-twin.yaml"
    provider.write_text(provider.read_text().replace("/var/lib/grafana/dashboards/facility-twin",
                                                     "/usr/share/facility-twin/grafana/dashboards"))
    install(DEBIAN / "lintian-overrides", root / "usr/share/lintian/overrides/facility-twin")


def control_files(root: Path, ver: str, arch: str) -> None:
    meta = root / "DEBIAN"
    meta.mkdir()
    size_kib = sum((p.lstat().st_size + 1023) // 1024 for p in root.rglob("*") if not p.is_dir()) + \
        sum(1 for p in root.rglob("*") if p.is_dir())
    (meta / "control").write_text((DEBIAN / "control.in").read_text().replace("@VERSION@", ver)
                                  .replace("@ARCH@", arch).replace("@INSTALLED_SIZE@", str(size_kib)))
    install(DEBIAN / "conffiles", meta / "conffiles")
    for script in ("postinst", "prerm", "postrm"):
        install(DEBIAN / script, meta / script, 0o755)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the .deb goes (default dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "deb", help="staging folder (emptied first)")
    parser.add_argument("--compression", choices=["xz", "gzip", "zstd", "none"], default="xz")
    args = parser.parse_args(argv)

    if not Path(PYTHON).exists() or shutil.which("dpkg-deb") is None:
        raise SystemExit(f"needs Debian's {PYTHON} (with python3-venv) and dpkg-deb")
    ver = version()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or _commit_time() or time.time())
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    os.umask(0o022)
    build_venv(work, root)
    lay_out_files(root, ver, epoch)
    control_files(root, ver, arch)
    args.out.mkdir(parents=True, exist_ok=True)
    deb = args.out.resolve() / f"facility-twin_{ver}_{arch}.deb"
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    run("dpkg-deb", "--root-owner-group", f"-Z{args.compression}", "--build", root, deb, env=env)
    print(deb)
    return 0


def _commit_time() -> int | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return int(out) if out.isdigit() else None


if __name__ == "__main__":
    sys.exit(main())
