/* Checks that a file is a complete shared object for this machine before dlopen maps it.
 * The dynamic loader trusts the headers: a program header that points past the end of a
 * truncated file makes it map pages that do not exist, and the first touch is a SIGBUS in
 * berthd. Everything the loader maps or reads must therefore lie inside the file. */
#include "core.h"

#include <elf.h>
#include <errno.h>
#include <inttypes.h>
#include <link.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__x86_64__)
#define HOST_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define HOST_MACHINE EM_AARCH64
#elif defined(__i386__)
#define HOST_MACHINE EM_386
#elif defined(__arm__)
#define HOST_MACHINE EM_ARM
#elif defined(__riscv)
#define HOST_MACHINE EM_RISCV
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_DATA ELFDATA2LSB
#else
#define HOST_DATA ELFDATA2MSB
#endif

#if __SIZEOF_POINTER__ == 8
#define HOST_CLASS ELFCLASS64
#else
#define HOST_CLASS ELFCLASS32
#endif

static int fail(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return BERTH_EINVAL;
}

/* off + n * each lies within size, without overflow */
static bool within(uint64_t off, uint64_t n, uint64_t each, uint64_t size)
{
    if (each && n > UINT64_MAX / each) return false;
    uint64_t len = n * each;
    return off <= size && len <= size - off;
}

static bool read_at(int fd, void *p, size_t n, uint64_t off)
{
    return pread(fd, p, n, (off_t)off) == (ssize_t)n;
}

static int check_ehdr(const ElfW(Ehdr) *h, uint64_t size, char *err, size_t len)
{
    if (memcmp(h->e_ident, ELFMAG, SELFMAG))
        return fail(err, len, "not an ELF file (no ELF magic)");
    if (h->e_ident[EI_CLASS] != HOST_CLASS || h->e_ident[EI_DATA] != HOST_DATA)
        return fail(err, len, "an ELF file for another word size or byte order");
#ifdef HOST_MACHINE
    if (h->e_machine != HOST_MACHINE)
        return fail(err, len, "an ELF file for another machine (e_machine %u)", h->e_machine);
#endif
    if (h->e_type != ET_DYN) return fail(err, len, "an ELF file but not a shared object");
    if (h->e_phentsize != sizeof(ElfW(Phdr)) || !h->e_phnum ||
        !within(h->e_phoff, h->e_phnum, sizeof(ElfW(Phdr)), size))
        return fail(err, len, "truncated or corrupt: its program header table lies outside "
                    "the file (%" PRIu64 " bytes)", size);
    if (h->e_shnum && (h->e_shentsize != sizeof(ElfW(Shdr)) ||
                       !within(h->e_shoff, h->e_shnum, sizeof(ElfW(Shdr)), size)))
        return fail(err, len, "truncated or corrupt: its section header table lies outside "
                    "the file (%" PRIu64 " bytes)", size);
    return 0;
}

static int check_phdrs(int fd, const ElfW(Ehdr) *h, uint64_t size, char *err, size_t len)
{
    bool load = false, dyn = false;
    for (unsigned i = 0; i < h->e_phnum; i++) {
        ElfW(Phdr) p;
        if (!read_at(fd, &p, sizeof p, h->e_phoff + (uint64_t)i * sizeof p))
            return fail(err, len, "cannot read program header %u", i);
        if (!within(p.p_offset, p.p_filesz, 1, size))
            return fail(err, len, "truncated: segment %u needs bytes up to %" PRIu64 " but the "
                        "file has %" PRIu64, i, (uint64_t)p.p_offset + p.p_filesz, size);
        if (p.p_type == PT_LOAD) {
            if (p.p_filesz > p.p_memsz)
                return fail(err, len, "corrupt: segment %u is larger in the file than in "
                            "memory", i);
            load = true;
        }
        dyn |= p.p_type == PT_DYNAMIC;
    }
    if (!load || !dyn) return fail(err, len, "an ELF file without loadable dynamic segments");
    return 0;
}

static int check_shdrs(int fd, const ElfW(Ehdr) *h, uint64_t size, char *err, size_t len)
{
    for (unsigned i = 0; i < h->e_shnum; i++) {
        ElfW(Shdr) s;
        if (!read_at(fd, &s, sizeof s, h->e_shoff + (uint64_t)i * sizeof s))
            return fail(err, len, "cannot read section header %u", i);
        if (s.sh_type != SHT_NOBITS && !within(s.sh_offset, s.sh_size, 1, size))
            return fail(err, len, "truncated: section %u lies outside the file", i);
    }
    return 0;
}

int elf_check_fd(int fd, char *err, size_t len)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return fail(err, len, "cannot stat: %s", strerror(errno));
    uint64_t size = (uint64_t)st.st_size;
    ElfW(Ehdr) h;
    if (size < sizeof h || !read_at(fd, &h, sizeof h, 0))
        return fail(err, len, "not a shared object: %" PRIu64 " bytes is shorter than an ELF "
                    "header", size);
    int rc = check_ehdr(&h, size, err, len);
    if (!rc) rc = check_phdrs(fd, &h, size, err, len);
    if (!rc) rc = check_shdrs(fd, &h, size, err, len);
    return rc;
}
