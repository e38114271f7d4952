# The preamble every command in scripts/ and bench/ shares: strict mode, `root` (the
# repository), the pinned tools' versions and paths (tool-versions.sh), and helpers.
#   source "$(dirname "$0")/../scripts/lib.sh"
# shellcheck shell=bash
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/tool-versions.sh
source "$root/scripts/tool-versions.sh"

# Installs what the machine lacks (idempotent; the slow builds are cached).
install_tools() {
  bash "$root/scripts/install-tools.sh"
}

# A free port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
