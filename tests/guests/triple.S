# Prints from ring 3, then triple-faults: int $0x82 hits a non-present gate, and neither #NP
# nor #DF has a handler.
    .include "common.inc"
user_main:
    lea msg(%rip), %rsi
    call puts
    int $0x82
msg:
    .asciz "about to triple fault\n"
