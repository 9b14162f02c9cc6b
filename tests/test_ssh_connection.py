"""Connecting to a real sshd on loopback: host keys (unknown refused, trust on first use
recorded, changed refused even then), a key the server does not accept, an unreachable
port, a ~/.ssh/config alias with its HostName/Port/User/IdentityFile, and ProxyJump."""
import subprocess
import sys

import pytest

from targets import TargetError, open_target
from targets.inventory import parse_target
from harness.testing.sshd import keygen, make_sshd


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    sshd = make_sshd(tmp_path_factory.mktemp("sshd"))
    yield sshd
    sshd.stop()


def connect(tmp_path, table, name="edge"):
    target = open_target(parse_target(name, table, "test"), tmp_path / "cache")
    try:
        return target.info()
    finally:
        target.close()


def ssh_keygen_fingerprint(public_key) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True).stdout.split()[1]


def test_known_host_connects(device, tmp_path):
    info = connect(tmp_path, device.target(python=sys.executable, workdir=str(tmp_path / "w")))
    assert info.kind == "ssh" and info.facts["ssh"] == f"{device.target()['user']}@127.0.0.1:{device.port}"


def test_unknown_host_key_is_refused_with_how_to_trust_it(device, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(TargetError) as refused:
        connect(tmp_path, device.target(known_hosts=str(empty)))
    message = str(refused.value)
    assert f"[127.0.0.1]:{device.port} is not in {empty}" in message
    assert ssh_keygen_fingerprint(device.host_key.with_suffix(".pub")) in message  # the fingerprint ssh-keygen shows
    assert f"ssh-keyscan -p {device.port} 127.0.0.1 >> {empty}" in message and "trust_on_first_use = true" in message
    assert empty.read_text() == ""  # nothing recorded


def test_trust_on_first_use_records_the_key(device, tmp_path):
    known = tmp_path / "ssh" / "known_hosts"  # not there yet
    connect(tmp_path, device.target(known_hosts=str(known), trust_on_first_use=True, python=sys.executable, workdir=str(tmp_path / "w")))
    kind, key = device.host_key.with_suffix(".pub").read_text().split()[:2]
    assert known.read_text() == f"[127.0.0.1]:{device.port} {kind} {key}\n"
    # from now on the recorded key is what the device must present
    connect(tmp_path, device.target(known_hosts=str(known), python=sys.executable, workdir=str(tmp_path / "w")))


def test_changed_host_key_is_refused_even_with_trust_on_first_use(device, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{device.port} {kind} {key}\n")
    for trust in (False, True):
        with pytest.raises(TargetError) as refused:
            connect(tmp_path, device.target(known_hosts=str(known), trust_on_first_use=trust))
        message = str(refused.value)
        assert "HOST KEY CHANGED" in message and "Refused" in message
        assert ssh_keygen_fingerprint(device.host_key.with_suffix(".pub")) in message
        assert ssh_keygen_fingerprint(other.with_suffix(".pub")) in message
        assert f"ssh-keygen -R '[127.0.0.1]:{device.port}' -f {known}" in message
    assert known.read_text() == f"[127.0.0.1]:{device.port} {kind} {key}\n"


def test_changed_host_key_stops_the_cli_check(device, tmp_path):
    from harness.testing.sshd import inventory_toml

    other = keygen(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{device.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    inventory = tmp_path / "targets.toml"
    inventory.write_text(inventory_toml({"edge": device.target(known_hosts=str(known))}))
    check = subprocess.run([sys.executable, "-m", "harness.cli", "targets", "check", "edge", "--inventory", str(inventory)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
    assert "HOST KEY CHANGED" in check.stderr


def test_a_key_the_device_does_not_accept(device, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(TargetError, match=r"refused our key .*stranger.*authorized_keys"):
        connect(tmp_path, device.target(identity_file=str(stranger)))


def test_nothing_listening(device, tmp_path):
    from harness.testing.processes import free_port

    with pytest.raises(TargetError, match=r"cannot connect to .*127\.0\.0\.1.*Is the device on and reachable"):
        connect(tmp_path, device.target(port=free_port()))


def test_ssh_config_alias(device, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(f"Host bench-pi\n  HostName 127.0.0.1\n  Port {device.port}\n  User {device.target()['user']}\n"
                      f"  IdentityFile {device.user_key}\n")
    table = {"kind": "ssh", "host": "bench-pi", "ssh_config": str(config), "known_hosts": str(device.known_hosts),
             "python": sys.executable, "workdir": str(tmp_path / "w")}
    info = connect(tmp_path, table)
    assert info.facts["ssh"] == f"{device.target()['user']}@127.0.0.1:{device.port}"


def test_proxy_jump_through_a_bastion(device, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(f"Host bastion\n  HostName 127.0.0.1\n  Port {device.port}\n  IdentityFile {device.user_key}\n"
                      f"Host inner\n  HostName 127.0.0.1\n  Port {device.port}\n  IdentityFile {device.user_key}\n  ProxyJump bastion\n")
    before = device.log.count("Accepted publickey")
    info = connect(tmp_path, {"kind": "ssh", "host": "inner", "ssh_config": str(config), "known_hosts": str(device.known_hosts),
                              "python": sys.executable, "workdir": str(tmp_path / "w")})
    assert info.facts["ssh"].endswith(f"via {device.target()['user']}@127.0.0.1:{device.port}")
    assert device.log.count("Accepted publickey") == before + 2  # the bastion, then the device through it


def test_a_workdir_with_other_files_is_not_taken_over(device, tmp_path):
    home_like = tmp_path / "home"
    home_like.mkdir()
    (home_like / "thesis.tex").write_text("precious")
    with pytest.raises(TargetError, match="already holds other files and is not a quantbench work directory"):
        connect(tmp_path, device.target(python=sys.executable, workdir=str(home_like)))
    assert sorted(p.name for p in home_like.iterdir()) == ["thesis.tex"]
