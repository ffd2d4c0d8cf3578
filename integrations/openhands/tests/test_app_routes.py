"""The real app (patched) over HTTP: identity from sandport only, per-user data."""

from __future__ import annotations

from uuid import uuid4

import pytest
from conftest import as_user


@pytest.fixture(scope='module')
def client(patched_tree):
    from fastapi.testclient import TestClient

    from openhands.app_server.app import app

    # no lifespan (database migrations) is needed for these routes
    return TestClient(app, raise_server_exceptions=False)


def test_requests_without_identity_get_401(client, user_data) -> None:
    for path in ('/api/v1/settings', '/api/v1/sandboxes/search', '/api/v1/secrets/search'):
        assert client.get(path).status_code == 401, path
        # the header alone, without sandport's signed assertion, is a forgery
        assert client.get(path, headers={'X-Cognito-User-Id': 'alice'}).status_code == 401
        assert client.get(path, headers=as_user('../alice')).status_code == 401


def test_settings_are_per_user_and_errors_are_not_404(client, user_data) -> None:
    assert client.get('/api/v1/settings', headers=as_user('alice')).status_code == 404
    stored = client.post('/api/v1/settings', headers=as_user('alice'), json={'language': 'fr'})
    assert stored.status_code == 200, stored.text
    alice = client.get('/api/v1/settings', headers=as_user('alice'))
    assert alice.status_code == 200 and alice.json()['language'] == 'fr'
    assert client.get('/api/v1/settings', headers=as_user('bob')).status_code == 404

    (user_data.root / 'users/alice/settings.json').write_text('{"language": ')
    broken = client.get('/api/v1/settings', headers=as_user('alice'))
    assert broken.status_code == 500  # not 404: the UI must not write defaults over it


def test_sandbox_listing_is_per_user(client, user_data, monkeypatch) -> None:
    import openhands.app_server.sandbox.docker_sandbox_spec_service as spec_module
    from test_sandbox import FakeContainer, RecordingDockerClient

    docker = RecordingDockerClient()
    monkeypatch.setattr(spec_module, '_global_docker_client', docker)
    alice_id = f'oh-agent-server-{uuid4().hex}'
    docker.by_name[alice_id] = FakeContainer(
        alice_id, {'user_id': 'alice', 'conversation_id': alice_id[-32:]}, {}
    )

    bob = client.get('/api/v1/sandboxes/search', headers=as_user('bob'))
    assert bob.status_code == 200 and bob.json()['items'] == []
    assert client.post(f'/api/v1/sandboxes/{alice_id}/pause', headers=as_user('bob')).status_code == 404
    alice = client.get('/api/v1/sandboxes/search', headers=as_user('alice'))
    assert [s['id'] for s in alice.json()['items']] == [alice_id]
    assert alice.json()['items'][0]['created_by_user_id'] == 'alice'


def test_the_streaming_start_refuses_another_users_conversation_id_with_409(
        client, user_data, monkeypatch) -> None:
    """Patch 33: the stream answers 200 before upstream's start runs, so the id is claimed
    before the response starts; bob gets 409 for alice's id, and no sandbox is created."""
    import asyncio

    import openhands.app_server.sandbox.docker_sandbox_spec_service as spec_module
    from test_sandbox import RecordingDockerClient

    from sandport_openhands.conversations import claim_conversation_id, conversation_owner

    docker = RecordingDockerClient()
    monkeypatch.setattr(spec_module, '_global_docker_client', docker)
    alices = uuid4()
    asyncio.run(claim_conversation_id('alice', alices))

    refused = client.post('/api/v1/app-conversations/stream-start', headers=as_user('bob'),
                          json={'conversation_id': str(alices)})
    assert refused.status_code == 409, refused.text
    assert refused.json()['detail'] == 'conversation id belongs to another user'
    assert docker.runs == []
    assert asyncio.run(conversation_owner(alices)) == 'alice'
