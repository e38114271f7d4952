"""Builds the worker's container image without Docker, a daemon or a base image: an OCI
image layout (one layer) holding the binary, exactly the shared libraries it links
(from this machine: glibc, whose DNS and files resolvers are built in since 2.34), CA
certificates for TLS to AWS and Redis, an nsswitch.conf, and a passwd entry for the
unprivileged user the task definition runs. Its config carries what deploy/Dockerfile
says: entrypoint, user, SIGTERM, port and health check (`worker-native healthcheck`).

    python deploy/image.py [--binary target/release/worker-native] [--out target/image] [--tag TAG] [--arch amd64|arm64]

The image's architecture is this machine's unless --arch says otherwise, and must be
the binary's (its ELF header says) and the libraries': a label that does not match what
is packed makes a task that fails to start (`exec format error`), on Fargate the
template's WorkerArchitecture (X86_64 is amd64, ARM64 arm64). The libraries come from
this machine, so an arm64 image is built on an arm64 machine (a Graviton runner).

Push it with `skopeo copy oci:target/image:TAG docker://ACCOUNT.dkr.ecr.REGION.amazonaws.com/worker-native:TAG`.
The layer is reproducible: same binary, same libraries, same digest.
"""

import argparse
import gzip
import hashlib
import io
import json
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER = "10001:10001"
ENTRYPOINT = ["/worker-native"]
HEALTHCHECK = ["CMD", "/worker-native", "healthcheck"]
HEALTH_PORT = "8081"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# OCI's architecture names, by the ELF header's e_machine (EM_X86_64, EM_AARCH64).
ELF_MACHINES = {62: "amd64", 183: "arm64"}
# platform.machine()'s names for them.
HOST_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def elf_arch(path: Path) -> str:
    """The architecture `path` is built for, from its ELF header (e_machine, read in
    the byte order EI_DATA gives)."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise SystemExit(f"{path}: not an ELF file")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"ELF machine {machine}")


def host_arch() -> str:
    machine = platform.machine()
    if machine.lower() not in HOST_ARCHES:
        raise SystemExit(f"this machine is {machine}: the image is built for amd64 or arm64 only")
    return HOST_ARCHES[machine.lower()]


def check_arch(binary: Path, arch: str) -> None:
    """Refuses an image whose label would not be what it packs: the binary built for
    another architecture, or libraries of this machine that are not `arch`'s."""
    built_for, host = elf_arch(binary), host_arch()
    if built_for != arch:
        whose = " (this machine's: --arch chooses)" if arch == host else ""
        then = (f"or build the image with --arch {built_for}" if built_for == host
                else f"or build the {built_for} image on an {built_for} machine")
        raise SystemExit(f"{binary} is an {built_for} binary, and the image would be {arch}{whose}: "
                         f"build the binary for {arch}, {then}")
    if arch != host:
        raise SystemExit(f"--arch {arch} on this {host} machine: the image holds this machine's shared libraries "
                         f"(glibc, from ldd), which are {host}; build the {arch} image on an {arch} machine")


def linked_libraries(binary: Path) -> list[Path]:
    """The shared libraries `binary` loads, the dynamic loader included (from ldd)."""
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    if not libs:
        raise SystemExit(f"{binary}: ldd lists no libraries (a static binary needs none; use one built for glibc)")
    return libs


def stripped(binary: Path) -> bytes:
    """The binary without its symbols and debug information (a panic's message stays)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "worker-native"
        shutil.copy(binary, copy)
        subprocess.run(["strip", "--strip-unneeded", str(copy)], check=True)
        return copy.read_bytes()


def layer(binary: Path, arch: str) -> bytes:
    """The image's one layer: an uncompressed tar with fixed owners and times."""
    files = {"worker-native": (stripped(binary), 0o755)}
    for lib in linked_libraries(binary):
        if elf_arch(lib.resolve()) != arch:
            raise SystemExit(f"{lib} (linked by {binary}) is {elf_arch(lib.resolve())}, not {arch}")
        files[str(lib).lstrip("/")] = (lib.resolve().read_bytes(), 0o755)
    if not CA_BUNDLE.exists():
        raise SystemExit(f"{CA_BUNDLE} is missing: install the ca-certificates package")
    files["etc/ssl/certs/ca-certificates.crt"] = (CA_BUNDLE.read_bytes(), 0o644)
    files["etc/nsswitch.conf"] = (b"hosts: files dns\n", 0o644)
    files["etc/passwd"] = (b"root:x:0:0:root:/:/nonexistent\nworker:x:10001:10001:worker:/:/nonexistent\n", 0o644)
    files["etc/group"] = (b"root:x:0:\nworker:x:10001:\n", 0o644)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parents[i]) for p in files for i in range(len(Path(p).parents) - 1)})
        for d in dirs + ["tmp"]:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            data, mode = files[path]
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def blob(out: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (out / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (out / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build(binary: Path, out: Path, tag: str, arch: str | None = None) -> dict:
    """Writes the OCI layout to `out` for `arch` (default: this machine's); returns the
    image config."""
    arch = arch or host_arch()
    check_arch(binary, arch)
    tar = layer(binary, arch)
    compressed = gzip.compress(tar, mtime=0)
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": ENTRYPOINT,
            "Env": ["PATH=/", f"HEALTH_PORT={HEALTH_PORT}", f"SSL_CERT_FILE={CA_BUNDLE}"],
            "ExposedPorts": {f"{HEALTH_PORT}/tcp": {}},
            "StopSignal": "SIGTERM",
            # Docker's health check (the OCI config has none; Docker and Podman read it).
            "Healthcheck": {"Test": HEALTHCHECK, "Interval": 15_000_000_000, "Timeout": 5_000_000_000,
                            "StartPeriod": 20_000_000_000, "Retries": 3},
            "Labels": {"org.opencontainers.image.title": "worker-native",
                       "org.opencontainers.image.description": "rate-limited messaging worker"},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
        "history": [{"created_by": "deploy/image.py"}],
    }
    out.mkdir(parents=True, exist_ok=True)
    config_blob = blob(out, json.dumps(config, sort_keys=True).encode())
    layer_blob = blob(out, compressed)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_blob},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_blob}],
    }
    manifest_blob = blob(out, json.dumps(manifest, sort_keys=True).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_blob,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (out / "index.json").write_text(json.dumps(index, sort_keys=True))
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return {"config": config, "manifest": manifest_blob["digest"], "layerBytes": len(compressed), "uncompressedBytes": len(tar)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "worker-native")
    p.add_argument("--out", type=Path, default=ROOT / "target" / "image")
    p.add_argument("--tag", default="latest")
    p.add_argument("--arch", choices=sorted(set(ELF_MACHINES.values())),
                   help="the image's architecture (default: this machine's); the binary must be built for it")
    a = p.parse_args()
    if not a.binary.exists():
        raise SystemExit(f"{a.binary} is missing: cargo build --release -p worker-native --bin worker-native")
    built = build(a.binary, a.out, a.tag, a.arch)
    print(f"image oci:{a.out}:{a.tag} ({built['config']['architecture']}) manifest {built['manifest']}: layer {built['layerBytes'] / 1e6:.1f} MB gzip "
          f"({built['uncompressedBytes'] / 1e6:.1f} MB unpacked)")


if __name__ == "__main__":
    main()
