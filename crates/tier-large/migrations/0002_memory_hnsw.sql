-- Approximate nearest-neighbour indexes (HNSW, cosine), one per common vector size: an
-- expression index on the cast to that size, partial on the rows of that size. Searches
-- use the same expression (and so the index) only for collections large enough to need it.
CREATE INDEX memory_hnsw_256 ON memory_documents
    USING hnsw ((embedding::vector(256)) vector_cosine_ops) WHERE dimensions = 256;
CREATE INDEX memory_hnsw_384 ON memory_documents
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dimensions = 384;
CREATE INDEX memory_hnsw_512 ON memory_documents
    USING hnsw ((embedding::vector(512)) vector_cosine_ops) WHERE dimensions = 512;
CREATE INDEX memory_hnsw_1024 ON memory_documents
    USING hnsw ((embedding::vector(1024)) vector_cosine_ops) WHERE dimensions = 1024;
CREATE INDEX memory_hnsw_1536 ON memory_documents
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE dimensions = 1536;
