"""The inventory's ssh fields: the shipped example parses, mistakes are named with the field,
and a ~/.ssh/config alias resolves as OpenSSH would, with the inventory's own fields winning."""
import shutil

import pytest

from targets import TargetError
from targets.inventory import load_inventory, parse_target
from targets.ssh_config import parse_ssh_settings, resolve
from tests.conftest import REPO_ROOT


def test_example_inventory_parses():
    targets = load_inventory(str(REPO_ROOT / "targets.example.toml"))
    assert targets["pi5"].kind == "ssh" and targets["pi5"].profile == "raspberry-pi-5"
    assert targets["jetson"].kind == "ssh" and targets["jetson"].profile == "jetson-orin"
    assert targets["pi5"].settings["sensors"]["idle_s"] == 2.0
    for name in ("pi5", "jetson"):
        parse_ssh_settings(targets[name].settings, name)


@pytest.mark.parametrize("table, message", [
    ({"kind": "ssh"}, "needs `host`"),
    ({"kind": "ssh", "host": "pi", "port": "22"}, "`port` must be a positive integer"),
    ({"kind": "ssh", "host": "pi", "usr": "bench"}, "unknown ssh field(s) usr"),
    ({"kind": "ssh", "host": "pi", "trust_on_first_use": "yes"}, "`trust_on_first_use` must be true or false"),
    ({"kind": "ssh", "host": "pi", "connect_timeout_s": 0}, "`connect_timeout_s` must be a positive number"),
    ({"kind": "ssh", "host": "pi", "password": "hunter2"}, "`password` must not live in the inventory"),
    ({"kind": "ssh", "host": "pi", "sensors": {"idle_s": "2"}}, "sensors.idle_s must be int or float"),
    ({"kind": "ssh", "host": "pi", "sensors": "x"}, "`sensors` must be a table"),
])
def test_mistakes_name_the_field(table, message):
    with pytest.raises(TargetError) as error:
        parse_target("pi", table, "targets.toml")
    assert message in str(error.value) and "targets.toml [targets.pi]" in str(error.value)


def test_alias_resolution_and_precedence(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host lab-pi\n  HostName 10.1.2.3\n  Port 2201\n  User pi\n  IdentityFile ~/.ssh/lab\n  ProxyJump gw\n"
                      "Host gw\n  HostName gw.example\n  User jump\n")
    target, jumps = resolve(parse_ssh_settings({"host": "lab-pi", "ssh_config": str(config)}, "t"))
    assert (target.hostname, target.port, target.user) == ("10.1.2.3", 2201, "pi")
    assert target.identity_files[0].endswith("/.ssh/lab") and target.known_hosts_name == "[10.1.2.3]:2201"
    assert [(j.hostname, j.port, j.user) for j in jumps] == [("gw.example", 22, "jump")]
    target, jumps = resolve(parse_ssh_settings({"host": "lab-pi", "ssh_config": str(config), "port": 22, "user": "bench",
                                                "proxy_jump": "ops@10.9.9.9:2222"}, "t"))
    assert (target.port, target.user, target.known_hosts_name) == (22, "bench", "10.1.2.3")  # the inventory wins
    assert [(j.hostname, j.port, j.user) for j in jumps] == [("10.9.9.9", 2222, "ops")]


def test_proxy_command_is_refused_with_the_alternative(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host odd\n  ProxyCommand nc %h %p\n")
    with pytest.raises(TargetError, match="ProxyCommand .* is not supported; use ProxyJump"):
        resolve(parse_ssh_settings({"host": "odd", "ssh_config": str(config)}, "t"))


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client: paramiko's parser ignores Include")
def test_host_from_an_included_file(tmp_path):
    """A host defined in a file the config Includes (~/.ssh/config.d/*-style) resolves to its
    HostName, Port and User, as `ssh` connects (paramiko alone would use the literal alias)."""
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "lab.conf").write_text("Host lab-jetson\n  HostName 10.4.5.6\n  Port 2202\n  User nvidia\n")
    config = tmp_path / "config"
    config.write_text(f"Include {tmp_path}/config.d/*\n\nHost *\n  ServerAliveInterval 30\n")
    target, jumps = resolve(parse_ssh_settings({"host": "lab-jetson", "ssh_config": str(config)}, "t"))
    assert (target.hostname, target.port, target.user, jumps) == ("10.4.5.6", 2202, "nvidia", ())
    assert target.identity_files == ()  # none named: the agent and the default keys, as before
