# Two commands for a fresh machine (see README.md):
#   make demo   a virtual environment with the pinned packages, then the whole pipeline on
#               the sample data (Python alone: no browser, npm or Debian package needed)
#   make test   everything the tests need, then the whole test suite (ruff and mypy included)
#
# `make setup` installs what the tests need besides the venv: Debian's chromium, spamassassin,
# valgrind, Dovecot (IMAP for `newsletter inbox`), Postfix (a real late bounce, and the
# smtp-sink the send benchmark sends to) and PostgreSQL (the postgresql:// database), when
# run as root (otherwise it says what to install), and the npm tools (axe-core, the official
# MJML compiler for the benchmark). Postfix is installed unconfigured ("No configuration")
# and PostgreSQL without its main cluster (create_main_cluster = false): the tests run their
# own instances from temporary folders; none is started as a service.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEBIAN_PACKAGES := chromium spamassassin valgrind dovecot-imapd postfix postgresql

.PHONY: setup venv demo test system benchmarks clean

setup: system venv node_modules/.installed

venv: $(VENV)/.installed

system:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v spamassassin >/dev/null 2>&1 || missing="$$missing spamassassin"; \
	command -v valgrind >/dev/null 2>&1 || missing="$$missing valgrind"; \
	[ -x /usr/sbin/dovecot ] || missing="$$missing dovecot-imapd"; \
	[ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-sink ] || missing="$$missing postfix"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    mkdir -p /etc/postgresql-common; cc=/etc/postgresql-common/createcluster.conf; \
	    if grep -qs '^create_main_cluster' $$cc; then \
	      sed -i 's/^create_main_cluster.*/create_main_cluster = false/' $$cc; \
	    else echo "create_main_cluster = false" >> $$cc; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	  else \
	    echo "note: browser, spam, IMAP, bounce and PostgreSQL tests and the send benchmark's sink need: sudo apt-get install$$missing (they skip or fall back without)"; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: venv
	$(BIN)/newsletter demo

test: setup
	$(BIN)/pytest -q

benchmarks: setup
	$(BIN)/python benchmarks/render.py
	$(BIN)/python benchmarks/archive.py
	$(BIN)/python benchmarks/subscribers.py
	$(BIN)/python benchmarks/send.py
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf build site outbox demo .pytest_cache .mypy_cache .ruff_cache
