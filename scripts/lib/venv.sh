# Sourced by the test scripts: `ensure_venv DIR` creates a Python virtualenv at DIR when it has
# no pip yet, installing Debian's python3-venv (apt-get) when `python3 -m venv` cannot work.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_venv() {
  local venv="$1"
  [ -x "$venv/bin/pip" ] && return 0
  echo "$(basename "$0"): creating the virtualenv $venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv"; then
    # Debian and Ubuntu ship `venv` without ensurepip in a separate package.
    echo "$(basename "$0"): python3 -m venv failed; installing python3-venv (apt-get)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
}
