# Every vCPU starts here (the VMM starts all at the entry, RBX = index). Each prints
# "cpu <index> apic <local APIC id>" under a spin lock and checks in; vCPU 0 waits for the
# number of vCPUs given as the first character of the command line (0x20000), prints
# "all cpus up", and resets.
    .include "common.inc"
user_main:
    call spin_lock
    lea cpu_msg(%rip), %rsi
    call puts
    lea '0'(%rbx), %eax
    call putc
    lea apic_msg(%rip), %rsi
    call puts
    mov $0xfee00020, %edi
    movl (%rdi), %eax
    shr $24, %eax
    add $'0', %eax
    call putc
    mov $'\n', %al
    call putc
    movl $0, spin(%rip)
    lock incl arrived(%rip)
    test %rbx, %rbx
    jnz 2f
    movzbl 0x20000, %ecx
    sub $'0', %ecx
1:  pause
    cmpl %ecx, arrived(%rip)
    jb 1b
    lea all_msg(%rip), %rsi
    call puts
    jmp reset
2:  pause
    jmp 2b

spin_lock:
    mov $1, %eax
1:  xchgl %eax, spin(%rip)
    test %eax, %eax
    jz 2f
    pause
    jmp 1b
2:  ret

    .balign 4
spin:
    .long 0
arrived:
    .long 0
cpu_msg:
    .asciz "cpu "
apic_msg:
    .asciz " apic "
all_msg:
    .asciz "all cpus up\n"
