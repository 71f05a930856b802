from topology.export import mermaid


def test_graph_draws_every_exchange_queue_and_binding(topology):
    text = mermaid(topology)
    assert text.startswith("flowchart LR\n")
    for obj in (*topology.exchanges, *topology.queues):
        assert f'"{obj.name}<br/>' in text
    assert 'taskq_jobs -- "email.*" --> taskq_email' in text
    assert 'taskq_retry -- "taskq-delay=4s" --> taskq_delay_4s' in text
    assert 'taskq_delay_4s -. "expires" .-> taskq_jobs' in text
    assert 'taskq_email -. "dead letters" .-> taskq_dlx' in text
    edges = [line for line in text.splitlines() if "-->" in line]
    assert len(edges) == len(topology.bindings)
