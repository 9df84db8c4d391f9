# Counts forever in ring 3: increments the 64-bit word at guest physical 0x5000 (the host reads
# it to tell whether the vCPU is running).
    .include "common.inc"
user_main:
    mov $0x5000, %edi
1:  incq (%rdi)
    jmp 1b
