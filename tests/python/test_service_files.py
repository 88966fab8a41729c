"""The launchd LaunchAgent template parses as a plist and has the keys launchd needs."""
import os
import plistlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def test_launchd_plist_has_required_keys():
    with open(os.path.join(ROOT, "launchd", "dev.llm-sidecar.plist"), "rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "dev.llm-sidecar"
    assert plist["ProgramArguments"][1:] == ["serve"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] is True
    listener = plist["Sockets"]["Listeners"]  # the name src/daemon/listener.rs activates
    assert listener["SockPathName"].endswith("/sock")
    assert listener["SockPathMode"] == 0o600
    assert listener["SockFamily"] == "Unix"
    assert plist["StandardErrorPath"] and plist["StandardOutPath"]
