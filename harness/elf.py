"""Read what the kernel reads of an ELF file: identification, machine, type and PT_INTERP.

Pure functions on bytes (the first few KiB of a file are enough for every executable the
project has met: the program headers follow the ELF header). Field layout from the System V
ABI, "ELF header" and "Program header" chapters; machine numbers from <elf.h>.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
PT_INTERP = 3

# e_machine -> the name file(1) and readelf use.
MACHINE_NAMES: dict[int, str] = {
    2: "SPARC",
    3: "Intel 80386",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "IBM S/390",
    40: "ARM",
    43: "SPARC V9",
    62: "x86-64",
    183: "AArch64",
    243: "RISC-V",
    258: "LoongArch",
}

_TYPE_NAMES = {ET_REL: "relocatable", ET_EXEC: "executable", ET_DYN: "shared object", ET_CORE: "core"}


class ElfFormatError(ValueError):
    """The bytes start with the ELF magic but the header cannot be read."""


@dataclass(frozen=True)
class ElfInfo:
    """What an ELF header says about a file."""

    machine: int  # e_machine
    bits: int  # 32 or 64 (EI_CLASS)
    endianness: str  # "little" or "big" (EI_DATA)
    elf_type: int  # e_type
    interpreter: str | None  # PT_INTERP, None for a static executable
    architecture: str | None  # GOARCH-style name (amd64, arm64, arm, 386, ...); None if not known

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, f"machine {self.machine}")

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.elf_type, f"type {self.elf_type}")

    @property
    def executable(self) -> bool:
        """True for the types execve accepts (ET_EXEC, ET_DYN); the kernel refuses the others."""
        return self.elf_type in (ET_EXEC, ET_DYN)

    @property
    def linking(self) -> str:
        return "dynamic" if self.interpreter is not None else "static"

    def describe(self) -> str:
        """file(1)-like: "ELF 64-bit LSB x86-64 (amd64) executable, dynamic (/lib64/ld-linux-x86-64.so.2)"."""
        order = "LSB" if self.endianness == "little" else "MSB"
        arch = f" ({self.architecture})" if self.architecture else ""
        if self.interpreter is not None:
            link = f"dynamic, interpreter {self.interpreter}"
        else:
            link = "static" if self.elf_type == ET_EXEC else "no interpreter (static-pie or a loader)"
        return f"ELF {self.bits}-bit {order} {self.machine_name}{arch} {self.type_name}, {link}"


def architecture_of(machine: int, bits: int, endianness: str) -> str | None:
    """The GOARCH name for an ELF machine, class and byte order; None when there is none."""
    little = endianness == "little"
    if bits == 64:
        return {
            62: "amd64",
            183: "arm64",
            21: "ppc64le" if little else "ppc64",
            22: "s390x",
            243: "riscv64",
            258: "loong64",
            8: "mips64le" if little else "mips64",
            43: "sparc64",
        }.get(machine)
    return {3: "386", 40: "arm", 8: "mipsle" if little else "mips", 20: "ppc", 243: "riscv32"}.get(machine)


def is_elf(head: bytes) -> bool:
    return head[:4] == ELF_MAGIC


def parse(head: bytes) -> ElfInfo:
    """Parse the ELF header and program headers found in head (the file's first bytes).

    Raises ElfFormatError when the header is cut short or its class or byte order is invalid.
    A PT_INTERP segment beyond head is reported as an interpreter of unknown path ("?").
    """
    if not is_elf(head):
        raise ElfFormatError("no ELF magic")
    if len(head) < 20:
        raise ElfFormatError(f"ELF header cut short ({len(head)} bytes)")
    elf_class, data = head[4], head[5]
    if elf_class not in (ELFCLASS32, ELFCLASS64):
        raise ElfFormatError(f"invalid EI_CLASS {elf_class}")
    if data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise ElfFormatError(f"invalid EI_DATA {data}")
    order: Literal["little", "big"] = "little" if data == ELFDATA2LSB else "big"
    bits = 64 if elf_class == ELFCLASS64 else 32

    def u(offset: int, size: int) -> int:
        if offset + size > len(head):
            raise ElfFormatError(f"ELF header cut short at byte {offset + size}")
        return int.from_bytes(head[offset : offset + size], order)

    elf_type, machine = u(16, 2), u(18, 2)
    if bits == 64:
        phoff, phentsize, phnum = u(32, 8), u(54, 2), u(56, 2)
    else:
        phoff, phentsize, phnum = u(28, 4), u(42, 2), u(44, 2)
    interpreter: str | None = None
    for index in range(phnum):
        entry = phoff + index * phentsize
        if entry + phentsize > len(head):
            break  # program headers beyond what was read: no PT_INTERP seen in them
        if u(entry, 4) != PT_INTERP:
            continue
        if bits == 64:
            offset, size = u(entry + 8, 8), u(entry + 32, 8)
        else:
            offset, size = u(entry + 4, 4), u(entry + 16, 4)
        if offset + size > len(head):
            interpreter = "?"
        else:
            interpreter = head[offset : offset + size].split(b"\0", 1)[0].decode("utf-8", "replace")
        break
    return ElfInfo(machine, bits, order, elf_type, interpreter, architecture_of(machine, bits, order))
