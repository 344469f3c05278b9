"""Optional embeddings for policy retrieval, through the fake OpenAI-compatible endpoint."""

from fakes.openai_server import FakeOpenAI

from assets.invoices import sample_data
from assets.invoices.knowledge import LABELS_PATH
from orchestration.context.knowledge import build_index, load_labels, retrieval_cache, retrieval_quality, retrieve
from resources.embeddings import OpenAIEmbeddings


def test_hybrid_retrieval_through_an_embeddings_endpoint_and_bm25_when_it_is_down():
    docs = sample_data.generate(20, 7).policy_documents
    with FakeOpenAI() as fake:
        emb = OpenAIEmbeddings(api_key="sk-test", base_url=fake.base_url, model="fake-embed", max_retries=0)
        index = build_index(docs, emb)
        assert index.embedding_model == "fake-embed"
        assert fake.embedding_requests[0]["body"]["model"] == "fake-embed"
        assert fake.embedding_requests[0]["authorization"] == "Bearer sk-test"
        quality = retrieval_quality(index, load_labels(LABELS_PATH), embed=emb.embed)
        assert quality["recall_at_5"] >= 0.9
        retrieval_cache.clear()
        before = len(fake.embedding_requests)
        first = retrieve(
            index, ["closed purchase order", "closed purchase order", "currency mismatch"], embed=emb.embed
        )
        again = retrieve(index, ["closed purchase order"], embed=emb.embed)
        assert len(fake.embedding_requests) == before + 1  # one call for the batch, then the cache
        assert again[0] == first[0] and first[0][0][0].heading == "Closed purchase orders"
    # The endpoint is gone: retrieval falls back to BM25 instead of failing the batch.
    down = OpenAIEmbeddings(api_key="sk-test", base_url=fake.base_url, model="fake-embed", max_retries=0, timeout_s=1)
    [hits] = retrieve(index, ["invoice against a closed purchase order"], embed=down.embed)
    assert hits and hits[0][0].heading == "Closed purchase orders"
