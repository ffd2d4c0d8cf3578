"""The start-up self-check passes on the patched app and names what an override breaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_selfcheck(tmp_path: Path, **env_changes: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in sys.path if p)
    env['SANDPORT_USER_DATA'] = str(tmp_path / 'user-data')
    env['OH_PERSISTENCE_DIR'] = str(tmp_path / 'persistence')
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, '-m', 'sandport_openhands.selfcheck'],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_selfcheck_passes_on_the_patched_app(patched_tree, tmp_path: Path) -> None:
    result = run_selfcheck(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'self-check passed' in result.stderr


def test_selfcheck_refuses_overridden_or_unconfigured_wiring(patched_tree, tmp_path: Path) -> None:
    result = run_selfcheck(
        tmp_path,
        # upstream's extension points used to undo the defaults
        OH_SANDBOX_KIND='DockerSandboxServiceInjector',
        OH_APP_CONVERSATION_INFO_KIND='SQLAppConversationInfoServiceInjector',
        # no way to tell sandport's requests from anybody else's
        SANDPORT_ASSERTION_KEY_FILE=None,
        SANDPORT_TRUSTED_PROXIES=None,
    )
    assert result.returncode == 1
    line = [x for x in result.stderr.splitlines() if x.startswith('SECURITY SELF-CHECK FAILED:')]
    assert line, result.stderr[-2000:]
    assert 'identity (' in line[0]
    assert 'sandbox service is DockerSandboxServiceInjector' in line[0]
    assert 'conversation metadata service is SQLAppConversationInfoServiceInjector' in line[0]
