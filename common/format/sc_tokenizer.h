/* sc_tokenizer.h — a Hugging Face `tokenizers` compatible tokenizer: the same
 * ids as `Tokenizer.encode(text).ids` and the same text as `decode`.
 *
 * Loads a tokenizer.json (or GPT-2's legacy vocab.json + merges.txt) and
 * runs the same pipeline as tokenizers 0.21:
 *   1. added tokens with normalized=false are cut out of the raw text
 *      (leftmost-longest, honouring lstrip / rstrip / single_word);
 *   2. each remaining piece is normalized (NFC, NFKC, NFD, NFKD, Lowercase,
 *      Strip, StripAccents, Prepend, Replace, Sequence), then added tokens
 *      with normalized=true are cut out of it;
 *   3. pre-tokenizers (ByteLevel, Split, Metaspace, Digits, WhitespaceSplit,
 *      Whitespace, Sequence) split it into words;
 *   4. the BPE model (merges by rank, ignore_merges, byte_fallback, unk and
 *      fuse_unk, continuing_subword_prefix, end_of_word_suffix) maps each
 *      word to ids;
 *   5. with add_special, the post-processor (TemplateProcessing, Roberta,
 *      Bert, ByteLevel, Sequence) adds its special tokens around them.
 * Any other component (WordPiece, Unigram or WordLevel models, BPE dropout,
 * unknown normalizers, pre-tokenizers, post-processors or decoders) is
 * refused at load with SC_ENOTSUP naming its type. The file's truncation and
 * padding settings are ignored (encode never truncates or pads).
 *
 * Invalid UTF-8: HF takes Rust strings, so its Python binding refuses bytes
 * that are not UTF-8. Here every maximal invalid subsequence (as Python's
 * bytes.decode("utf-8", "replace") and Rust's String::from_utf8_lossy cut
 * them) is replaced by U+FFFD before encoding: encode(bytes) equals HF's
 * encode(bytes.decode("utf-8", "replace")).
 *
 * Regular expressions run on PCRE2 (UTF + UCP, JIT when available); Unicode
 * normalization is utf8proc's.
 *
 * Concurrency: a loaded tokenizer is immutable; encode and decode take it
 * const and may run on any number of threads at once.
 */
#ifndef SC_TOKENIZER_H
#define SC_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"

typedef struct sc_tokenizer sc_tokenizer;

/* Loads the tokenizer at path: a tokenizer.json file, a directory holding
 * tokenizer.json, or a directory holding GPT-2's vocab.json + merges.txt
 * (then: byte-level BPE with GPT-2's split regex, and "<|endoftext|>" as a
 * special token when the vocabulary has it). Borrows path. *out = new
 * tokenizer, free with sc_tokenizer_free. Errors: SC_ENOENT (no such file),
 * SC_EFORMAT (malformed JSON or merges), SC_ENOTSUP (a component named in
 * the detail is not supported), SC_ENOMEM. */
sc_err sc_tokenizer_load(sc_tokenizer **out, const char *path);
void sc_tokenizer_free(sc_tokenizer *t);

/* Encodes len bytes of text (borrowed; need not be NUL-terminated, may hold
 * invalid UTF-8, see above). add_special: 1 applies the post-processor's
 * template as HF's encode(text) does, 0 as encode(text,
 * add_special_tokens=False). *ids = new array of *n ids, free with free();
 * on error *ids = NULL, *n = 0. */
sc_err sc_tokenizer_encode(const sc_tokenizer *t, const char *text, size_t len, int add_special,
			   int32_t **ids, size_t *n);

/* Decodes n ids (borrowed) as HF's decode(ids, skip_special_tokens): ids
 * the tokenizer does not know are dropped; skip_special drops added tokens
 * marked special. *text = new NUL-terminated string of *len bytes (valid
 * UTF-8), free with free(). */
sc_err sc_tokenizer_decode(const sc_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
			   char **text, size_t *len);

/* One more than the largest id of the model's vocabulary and the added
 * tokens: the embedding rows a model needs. */
int sc_tokenizer_vocab_size(const sc_tokenizer *t);

/* The id of token (NUL-terminated, borrowed: an added token or a model
 * vocabulary entry), or -1. */
int sc_tokenizer_token_id(const sc_tokenizer *t, const char *token);

/* The first id the post-processor puts before a sequence (BOS), the last
 * one it puts after (EOS), or -1 when it adds none. */
int sc_tokenizer_bos_id(const sc_tokenizer *t);
int sc_tokenizer_eos_id(const sc_tokenizer *t);

/* out = SHA-256 of the file the tokenizer was loaded from (of the two
 * files' digests, for vocab.json + merges.txt): its identity in cache keys. */
void sc_tokenizer_digest(const sc_tokenizer *t, uint8_t out[32]);

#endif
