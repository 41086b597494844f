#!/usr/bin/env bash
# Tests the Helm chart (deploy/helm/tollgate), the Prometheus alert rules and the Grafana
# dashboard: `helm lint --strict`, renders of several value sets validated against the
# Kubernetes schema, and the chart's properties (deploy/helm/tests/test_chart.py). No helm
# binary and no cluster: the `helm-python-sdk` wheel embeds Helm's engine, `kubernetes-validate`
# ships the Kubernetes schemas. Both are installed into .venv-helm/ (git-ignored) when missing.
# With TOLLGATE_BIN set (scripts/test.sh sets it), the rendered config files also go through
# `tollgate check-config`. Extra arguments go to pytest (e.g. -k checksum).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/venv.sh

venv="${HELM_VENV:-$PWD/.venv-helm}"
pins=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.4 pytest==9.2.0)

ensure_venv "$venv"
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "test-helm.sh: installing ${pins[*]} into $venv (PyPI)" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" >"$venv/.pins"
fi

if [ -z "${TOLLGATE_BIN:-}" ]; then
  echo "test-helm.sh: TOLLGATE_BIN is not set: the rendered configs are not run through tollgate check-config" >&2
fi
PYTHONDONTWRITEBYTECODE=1 exec "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider \
  deploy/helm/tests "$@"
