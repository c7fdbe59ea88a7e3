-- Vector memory: documents with their embeddings, and a count per tenant, collection and
-- model (kept by the same transactions, so that counting never scans).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE memory_documents (
    tenant text NOT NULL,
    collection text NOT NULL,
    id text NOT NULL,
    text text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    model text NOT NULL,
    dimensions integer NOT NULL,
    embedding vector NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, collection, id),
    CHECK (vector_dims(embedding) = dimensions)
);

-- Exact searches and re-embedding walk these.
CREATE INDEX memory_documents_scope ON memory_documents (tenant, collection, model);
CREATE INDEX memory_documents_model ON memory_documents (model);

CREATE TABLE memory_collections (
    tenant text NOT NULL,
    collection text NOT NULL,
    model text NOT NULL,
    documents bigint NOT NULL,
    PRIMARY KEY (tenant, collection, model)
);
