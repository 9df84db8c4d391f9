# Prints "tick\n" to COM1 about ten times a second, forever, from ring 3 (the host watches the
# console grow to tell whether the vCPU runs). Writes the boot-time marker first.
    .include "common.inc"
user_main:
    call boot_marker
1:  mov $200000000, %ecx
2:  dec %ecx
    jnz 2b
    lea msg(%rip), %rsi
    call puts
    jmp 1b
msg:
    .asciz "tick\n"
