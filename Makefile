# The two set-up commands: `make demo` and `make test`. Each bootstraps what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Servers the integration tests start (postgresql: the state several collectors share); lintian,
# python3-venv and systemd (systemd-analyze, sysusers, tmpfiles) for the Debian package test
# (tests/integration/test_debian_package.py); faketime steps the agent's clock (tests/integration/test_clock_step.py).
DEBIAN_PACKAGES := mosquitto influxdb victoria-metrics snmpd prometheus-node-exporter python3 lintian python3-venv systemd faketime postgresql
# Third-party protocol stacks the tests talk to (node-opcua), installed from the lock file.
NODE_PEERS := tests/peers/node-opcua
DEB_OUT ?= dist

.PHONY: demo test proto lint bench venv debian-packages node-packages node-peers demo-packages deb footprint clean

# Development and tests: the package with every extra, plus the test tools.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,plot,dev]'
	touch $(STAMP)

# The demo needs the package with its protocols and plotting, not the test tools. pip shows what it
# downloads and installs, so the first run (a minute or two) does not look hung.
$(DEMO_STAMP): pyproject.toml
	@if test -f $(STAMP) && ! test pyproject.toml -nt $(STAMP); then touch $@; exit 0; fi; \
	test -x $(PY) || python3 -m venv $(VENV); \
	echo "== first run: installing what the demo needs into $(VENV) (about 320 MB, a minute or two)"; \
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -e '.[demo]' && touch $@

venv: $(STAMP)

# Integration tests start real servers; Debian ships them all. snmpd's pass_persist fixture runs as
# `nobody` under Debian's /usr/bin/python3 (the venv's interpreter may live where nobody cannot read).
debian-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing" $$missing "with apt-get"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# npm for the test peers; Debian's packages only where no Node.js is installed at all.
node-packages:
	@command -v npm >/dev/null || { echo "installing nodejs npm with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }

$(NODE_PEERS)/node_modules/.package-lock.json: $(NODE_PEERS)/package-lock.json | node-packages
	cd $(NODE_PEERS) && npm ci --no-audit --no-fund --loglevel=error

node-peers: $(NODE_PEERS)/node_modules/.package-lock.json

# The demo's pump vibration sensors publish over MQTT: install Debian's broker when we can.
demo-packages:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { echo "installing mosquitto for the demo's MQTT sensors"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends mosquitto; } || \
	  echo "mosquitto could not be installed: the demo runs without the MQTT sensors"

demo: $(DEMO_STAMP) demo-packages
	$(VENV)/bin/twin-demo --report demo-report.json

test: $(STAMP) debian-packages node-peers
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider

proto: $(STAMP)
	$(PY) tools/gen_protos.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP) debian-packages
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The Debian package: the application in its own venv under /opt/facility-twin, units, configs,
# Grafana files, docs (packaging/README.md). Needs Debian's python3 (python3-venv) and dpkg-deb.
deb:
	/usr/bin/python3 packaging/build_deb.py --out $(DEB_OUT)

# Installed size and idle memory per role, each in a fresh venv (README "With pip, by role").
footprint: $(STAMP)
	$(PY) bench/footprint.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo-report.json $(NODE_PEERS)/node_modules
