#!/usr/bin/env bash
# Debian packages that the slow tests need: PostgreSQL (the MLflow server's backend in the multi-node
# test), Chromium (the HTML report's screenshot test) and pdflatex with booktabs (the LaTeX tables' compile
# test: texlive-latex-base, texlive-latex-recommended). Installs what is missing when run as root with
# apt-get; otherwise says what to install. Idempotent: does nothing when all are there.
set -euo pipefail
need=()
if ! command -v pg_ctl >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
  need+=(postgresql)
fi
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
if ! command -v pdflatex >/dev/null 2>&1 || ! kpsewhich booktabs.sty >/dev/null 2>&1; then
  need+=(texlive-latex-base texlive-latex-recommended)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "warning: missing system packages for the slow tests: ${need[*]} (install them with your package manager)" >&2
fi
